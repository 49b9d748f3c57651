"""A GGUF model's tokenizer through llama-cpp-python's low-level API: tokenise (special
tokens only where a chat template wrote them), token pieces, metadata. ``LlamaVocab`` loads the
vocabulary alone (``vocab_only``: no weights, no context), so a process that does not run the
model, such as the ingress in front of Ray replicas, renders and tokenises prompts exactly as
the engine would; ``LlamaRuntime`` is the same with the weights and a context.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import llama_cpp as llama

from insieme.errors import ConfigError, EngineError

_backend_lock = threading.Lock()
_backend_ready = False


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp logs every load and decode detail to stderr; a server's log is ours.
    return None


def init_backend() -> None:
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


class LlamaVocab:
    """One model's vocabulary and metadata (and, unless ``vocab_only``, its weights)."""

    def __init__(self, model_path: str, *, vocab_only: bool = True) -> None:
        init_backend()
        model_params = llama.llama_model_default_params()
        model_params.vocab_only = vocab_only
        self.model = llama.llama_model_load_from_file(model_path.encode(), model_params)
        if not self.model:
            raise ConfigError(f"llama.cpp could not load the model file {model_path}")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama.llama_model_n_ctx_train(self.model))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._control: dict[int, bool] = {}
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

    def close(self) -> None:
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
