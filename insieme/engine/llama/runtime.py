"""llama-cpp-python's low-level ctypes API, for the engine (with ``sampler``, its per-sequence
sampler chains, the only modules that call it for generation).

It loads a GGUF model into one context whose KV cache is shared by many sequences, and
offers the few operations the engine needs: tokenise, batch decode, read logits and move
sequences in the KV cache.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass

import llama_cpp as llama
import numpy as np

from insieme.errors import ConfigError, EngineError

_backend_lock = threading.Lock()
_backend_ready = False


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp logs every load and decode detail to stderr; a server's log is ours.
    return None


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama.llama_log_set(_quiet_log, ctypes.c_void_p(0))
            llama.llama_backend_init()
            _backend_ready = True


_SPECIAL_ATTRS = (llama.LLAMA_TOKEN_ATTR_CONTROL | llama.LLAMA_TOKEN_ATTR_USER_DEFINED
                  | llama.LLAMA_TOKEN_ATTR_UNKNOWN)
_C_SPACE = frozenset(" \t\n\v\f\r")  # C's isspace, which llama.cpp strips with


@dataclass(frozen=True, slots=True)
class SpecialToken:
    """A token llama.cpp finds by its text before it tokenises the rest."""

    id: int
    text: str
    control: bool  # control or unknown: found only when parsing special tokens
    lstrip: bool  # swallows the whitespace before it
    rstrip: bool  # and after it


@dataclass(frozen=True, slots=True)
class ContextShape:
    """How big the one context is."""

    n_ctx: int  # KV cells shared by all sequences
    n_batch: int  # most tokens in one llama_decode
    n_seq_max: int  # sequence ids that may live in the KV cache at once
    n_threads: int
    # False: each sequence id gets its own stream of n_ctx / n_seq_max cells, so a sequence's
    # attention (and its greedy output) is the same alone or in any batch. True: one pool
    # shared by all sequences, which can then grow past an equal share.
    kv_unified: bool = False


class Batch:
    """A reusable llama_batch: rows of (token, position, sequence ids, want logits)."""

    def __init__(self, capacity: int, n_seq_max: int) -> None:
        self.capacity = capacity
        self._batch = llama.llama_batch_init(capacity, 0, n_seq_max)
        self.size = 0

    def clear(self) -> None:
        self.size = 0

    def add(self, token: int, pos: int, seq_ids: list[int], logits: bool) -> int:
        """Append a row; returns its index (to read its logits after decoding)."""
        i = self.size
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = len(seq_ids)
        row = b.seq_id[i]
        for k, seq in enumerate(seq_ids):
            row[k] = seq
        b.logits[i] = logits
        self.size = i + 1
        return i

    def native(self) -> llama.llama_batch:
        self._batch.n_tokens = self.size
        return self._batch

    def close(self) -> None:
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None


class LlamaRuntime:
    """One model, one context, many sequences in a unified KV cache."""

    def __init__(
        self, model_path: str, shape_for: Callable[[int], ContextShape] | ContextShape
    ) -> None:
        """Load ``model_path``; ``shape_for`` maps the model's training context to the
        context to create (or is that context's shape)."""
        _init_backend()
        model_params = llama.llama_model_default_params()
        self.model = llama.llama_model_load_from_file(model_path.encode(), model_params)
        if not self.model:
            raise ConfigError(f"llama.cpp could not load the model file {model_path}")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama.llama_model_n_ctx_train(self.model))
        shape = shape_for if isinstance(shape_for, ContextShape) else shape_for(self.n_ctx_train)
        params = llama.llama_context_default_params()
        params.n_ctx = shape.n_ctx
        params.n_batch = shape.n_batch
        params.n_ubatch = shape.n_batch
        params.n_seq_max = shape.n_seq_max
        params.n_threads = shape.n_threads
        params.n_threads_batch = shape.n_threads
        params.kv_unified = shape.kv_unified
        params.no_perf = True
        self.ctx = llama.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama.llama_model_free(self.model)
            raise ConfigError("llama.cpp could not create a context (out of memory?)")
        self.shape = shape
        self.n_ctx = int(llama.llama_n_ctx(self.ctx))
        self.n_ctx_seq = self.n_ctx if shape.kv_unified else self.n_ctx // shape.n_seq_max
        self.memory = llama.llama_get_memory(self.ctx)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._control: dict[int, bool] = {}
        self._work = np.empty((shape.n_seq_max, self.n_vocab), dtype=np.float32)
        self._piece_buf = ctypes.create_string_buffer(256)
        self.bos_id = int(llama.llama_vocab_bos(self.vocab))
        self.add_bos = bool(llama.llama_vocab_get_add_bos(self.vocab))
        self.special_tokens = self._special_tokens()

    # -- text ---------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8", errors="replace")
        capacity = len(data) + 8
        out = (llama.llama_token * capacity)()
        n = llama.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special,
                                 parse_special)
        if n < 0:
            capacity = -n
            out = (llama.llama_token * capacity)()
            n = llama.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special,
                                     parse_special)
        if n < 0:
            raise EngineError("tokenisation failed")
        return list(out[:n])

    def tokenize_marked(self, text: str, markup: str) -> list[int]:
        """The tokens of ``text``, with special tokens only where ``markup`` spells them.

        ``markup`` is ``text`` with some characters masked. It is split at special token
        texts as llama.cpp splits a prompt when it parses special tokens (longest text
        first, leftmost first, whitespace stripped beside lstrip/rstrip tokens), and the
        text between two special tokens is tokenised from ``text`` as plain text, in one
        piece. So with ``markup == text`` this is ``tokenize(text, add_special=False)``, and
        a special token's text that ``markup`` masks stays text.
        """
        if len(markup) != len(text):
            raise ValueError("markup must be as long as the text")
        pieces: list[int | tuple[int, int]] = [(0, len(markup))]
        for special in self.special_tokens:
            if special.text in markup:
                pieces = _split_at(pieces, markup, special)
        tokens: list[int] = []
        for piece in pieces:
            if isinstance(piece, int):
                tokens.append(piece)
            else:
                tokens += self.tokenize(text[piece[0]:piece[1]], add_special=False,
                                        parse_special=False)
        return tokens

    @property
    def control_texts(self) -> list[str]:
        """The texts of the special tokens found only when parsing special tokens: the ones
        a chat template may write and a client must not."""
        return [t.text for t in self.special_tokens if t.control]

    def _special_tokens(self) -> list[SpecialToken]:
        """Every token llama.cpp's tokeniser looks for by its text, longest text first."""
        found = []
        for token in range(self.n_vocab):
            attr = int(llama.llama_vocab_get_attr(self.vocab, token))
            if not attr & _SPECIAL_ATTRS:
                continue
            raw = llama.llama_vocab_get_text(self.vocab, token)
            try:
                text = raw.decode("utf-8") if raw else ""
            except UnicodeDecodeError:
                continue  # never matches UTF-8 text
            if text:
                found.append(SpecialToken(
                    token, text,
                    control=bool(attr & (llama.LLAMA_TOKEN_ATTR_CONTROL
                                         | llama.LLAMA_TOKEN_ATTR_UNKNOWN)),
                    lstrip=bool(attr & llama.LLAMA_TOKEN_ATTR_LSTRIP),
                    rstrip=bool(attr & llama.LLAMA_TOKEN_ATTR_RSTRIP)))
        found.sort(key=lambda t: len(t.text.encode()), reverse=True)  # stable: ids in order
        return found

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens render as nothing); cached."""
        cached = self._pieces.get(token)
        if cached is None:
            n = llama.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def token_text(self, token: int) -> str:
        n = llama.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, True)
        return self._piece_buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        # Cached, as the pieces are: every ctypes call lets go of the GIL, and the event
        # loop thread, busy with the last step's tokens, may then hold on to it for a while.
        found = self._eog.get(token)
        if found is None:
            found = self._eog[token] = bool(llama.llama_vocab_is_eog(self.vocab, token))
        return found

    def is_control(self, token: int) -> bool:
        found = self._control.get(token)
        if found is None:
            found = self._control[token] = bool(llama.llama_vocab_is_control(self.vocab, token))
        return found

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            llama.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    # -- compute ------------------------------------------------------------------------

    def decode(self, batch: Batch) -> int:
        return int(llama.llama_decode(self.ctx, batch.native()))

    def logits(self, row: int) -> np.ndarray:
        ptr = llama.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def greedy_rows(self, outputs: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The most likely token and its log-probability for each of these output rows
        (indices into the last decode's logits, in batch order), in one pass over them."""
        ptr = llama.llama_get_logits(self.ctx)
        n_rows = max(outputs) + 1
        logits = np.ctypeslib.as_array(ptr, shape=(n_rows, self.n_vocab))
        work = self._scratch(len(outputs))
        if len(outputs) != n_rows:
            np.take(logits, outputs, axis=0, out=work)
            logits = work
        tokens = logits.argmax(axis=1)
        peaks = logits[np.arange(len(outputs)), tokens]
        np.subtract(logits, peaks[:, None], out=work)
        np.exp(work, out=work)
        return tokens, -np.log(work.sum(axis=1))

    def logprob(self, row: int, token: int) -> float:
        """log softmax of the raw logits at ``token`` (before any sampler transformation)."""
        logits = self.logits(row)
        peak = float(logits.max())
        work = self._scratch(1)[0]
        np.subtract(logits, peak, out=work)
        np.exp(work, out=work)
        return float(logits[token]) - peak - float(np.log(work.sum()))

    def _scratch(self, rows: int) -> np.ndarray:
        """A reused float32 buffer of ``rows`` vocab rows. Temporaries this size come from
        fresh mmap'd pages on every call, and faulting them in cost more than the maths:
        5.1 instead of 1.5 ms a step for 16 greedy rows here."""
        if self._work.shape[0] < rows:
            self._work = np.empty((rows, self.n_vocab), dtype=np.float32)
        return self._work[:rows]

    # -- KV cache -----------------------------------------------------------------------

    def seq_rm(self, seq: int, p0: int = 0, p1: int = -1) -> bool:
        return bool(llama.llama_memory_seq_rm(self.memory, seq, p0, p1))

    def seq_copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Make ``dst`` hold the first ``length`` tokens of ``src``.

        Split streams copy a whole stream (llama.cpp copies only full buffers across
        streams, at the next decode), then the tail is dropped; a unified pool relabels cells.
        """
        llama.llama_memory_seq_rm(self.memory, dst, -1, -1)
        if self.shape.kv_unified:
            llama.llama_memory_seq_cp(self.memory, src, dst, 0, length)
        else:
            llama.llama_memory_seq_cp(self.memory, src, dst, -1, -1)
            llama.llama_memory_seq_rm(self.memory, dst, length, -1)

    def seq_pos_max(self, seq: int) -> int:
        return int(llama.llama_memory_seq_pos_max(self.memory, seq))

    def clear(self) -> None:
        llama.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.ctx:
            llama.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            llama.llama_model_free(self.model)
            self.model = None


def _split_at(pieces: list[int | tuple[int, int]], markup: str,
              special: SpecialToken) -> list[int | tuple[int, int]]:
    """Split the text pieces ((start, end) of ``markup``) at each occurrence of ``special``,
    as llama.cpp's ``tokenizer_st_partition`` does for one token."""
    out: list[int | tuple[int, int]] = []
    text = special.text
    for piece in pieces:
        if isinstance(piece, int):
            out.append(piece)
            continue
        start, end = piece
        while (match := markup.find(text, start, end)) >= 0:
            left = match
            if special.lstrip:
                while left > start and markup[left - 1] in _C_SPACE:
                    left -= 1
            if left > start:
                out.append((start, left))
            out.append(special.id)
            start = match + len(text)
            if special.rstrip:
                while start < end and markup[start] in _C_SPACE:
                    start += 1
        if start < end:
            out.append((start, end))
    return out
