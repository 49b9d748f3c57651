"""llama-cpp-python's low-level ctypes API, for the engine (with ``sampler``, its per-sequence
sampler chains, the only modules that call it for generation).

It loads a GGUF model into one context whose KV cache is shared by many sequences, and
offers the few operations the engine needs: tokenise, batch decode, read logits and move
sequences in the KV cache. The tokenizer half is ``insieme.engine.llama.vocab``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import llama_cpp as llama
import numpy as np

from insieme.engine.llama.vocab import LlamaVocab
from insieme.errors import ConfigError


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


class LlamaRuntime(LlamaVocab):
    """One model, one context, many sequences in a unified KV cache."""

    def __init__(
        self, model_path: str, shape_for: Callable[[int], ContextShape] | ContextShape
    ) -> None:
        """Load ``model_path``; ``shape_for`` maps the model's training context to the
        context to create (or is that context's shape)."""
        super().__init__(model_path, vocab_only=False)
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
            super().close()
            raise ConfigError("llama.cpp could not create a context (out of memory?)")
        self.shape = shape
        self.n_ctx = int(llama.llama_n_ctx(self.ctx))
        self.n_ctx_seq = self.n_ctx if shape.kv_unified else self.n_ctx // shape.n_seq_max
        self.memory = llama.llama_get_memory(self.ctx)
        self._work = np.empty((shape.n_seq_max, self.n_vocab), dtype=np.float32)

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
        super().close()
