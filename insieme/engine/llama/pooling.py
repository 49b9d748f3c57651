"""A second llama.cpp context on the engine's model, for embeddings and relevance scores.

It shares the loaded model with the generation context (llama.cpp allows any number of
contexts on one model, each driven from its own thread) and has its own small KV pool, so
pooling never takes cells or decode steps from the sequences being generated. Each call
packs several inputs into one ``llama_decode``, one sequence id each, after clearing what
the last call left; llama.cpp pools each sequence's token embeddings as the context's
pooling type says (mean, CLS, last, or a reranker's classification head).

Every input must fit in one micro-batch: a pooled vector is reduced per micro-batch, so a
sequence split across two would pool only its second part.
"""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp as llama
import numpy as np

from insieme.engine.llama.runtime import Batch, LlamaRuntime
from insieme.errors import ConfigError, EngineError

NONE = llama.LLAMA_POOLING_TYPE_NONE
MEAN = llama.LLAMA_POOLING_TYPE_MEAN
RANK = llama.LLAMA_POOLING_TYPE_RANK


def model_pooling(runtime: LlamaRuntime) -> int | None:
    """The pooling type the GGUF declares (``{arch}.pooling_type``); None when it declares
    none, as a generative model does."""
    arch = runtime.meta("general.architecture")
    value = runtime.meta(f"{arch}.pooling_type") if arch else None
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class PoolingContext:
    """The embeddings context: ``n_tokens`` cells and a batch as large (see the module
    docstring), up to ``n_seq_max`` inputs a decode. Only one thread may use it."""

    def __init__(self, runtime: LlamaRuntime, *, pooling: int, n_tokens: int, n_seq_max: int,
                 n_threads: int) -> None:
        params = llama.llama_context_default_params()
        params.embeddings = True
        params.pooling_type = pooling
        params.n_ctx = n_tokens
        params.n_batch = n_tokens
        params.n_ubatch = n_tokens
        params.n_seq_max = n_seq_max
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = True  # one pool: any mix of input lengths fits n_tokens
        params.no_perf = True
        self.ctx = llama.llama_init_from_model(runtime.model, params)
        if not self.ctx:
            raise ConfigError("llama.cpp could not create the embeddings context")
        self.runtime = runtime
        self.n_tokens = n_tokens
        self.n_seq_max = n_seq_max
        self.pooling = int(llama.llama_pooling_type(self.ctx))
        self.n_embd = int(llama.llama_model_n_embd_out(runtime.model))
        self.n_cls_out = int(llama.llama_model_n_cls_out(runtime.model))
        self.memory = llama.llama_get_memory(self.ctx)  # None: no KV cache (encoder-only)
        self._batch = Batch(n_tokens, n_seq_max)
        self._embeddings = True

    def pooled(self, sequences: list[list[int]]) -> np.ndarray:
        """Each sequence's pooled output, one row each: its embedding, or with rank pooling
        the classifier's ``n_cls_out`` scores."""
        self._set_embeddings(True)
        width = self.n_cls_out if self.pooling == RANK else self.n_embd
        out = np.empty((len(sequences), width), dtype=np.float32)
        for start, group in self._groups(sequences):
            self._decode(group)
            for seq in range(len(group)):
                ptr = llama.llama_get_embeddings_seq(self.ctx, seq)
                if not ptr:
                    raise EngineError("llama.cpp returned no pooled embedding")
                out[start + seq] = np.ctypeslib.as_array(ptr, shape=(width,))
        return out

    def last_logits(self, prefix: list[int], sequences: list[list[int]],
                    token_ids: list[int]) -> np.ndarray:
        """The raw next-token logits of ``token_ids`` after ``prefix`` + each sequence; the
        prefix is computed once a decode, its cells shared by every sequence in it (a causal
        model's KV cache only)."""
        self._set_embeddings(False)
        out = np.empty((len(sequences), len(token_ids)), dtype=np.float32)
        columns = np.asarray(token_ids, dtype=np.intp)
        n_vocab = self.runtime.n_vocab
        for start, group in self._groups(sequences, reserve=len(prefix)):
            rows = self._decode(group, prefix=prefix)
            for k, row in enumerate(rows):
                ptr = llama.llama_get_logits_ith(self.ctx, row)
                if not ptr:
                    raise EngineError("llama.cpp returned no logits")
                out[start + k] = np.ctypeslib.as_array(ptr, shape=(n_vocab,))[columns]
        return out

    def _set_embeddings(self, on: bool) -> None:
        if self._embeddings != on:
            llama.llama_set_embeddings(self.ctx, on)
            self._embeddings = on

    def _groups(self, sequences: list[list[int]],
                reserve: int = 0) -> Iterator[tuple[int, list[list[int]]]]:
        """Consecutive runs of sequences that fit one decode beside ``reserve`` tokens, with
        the first one's index."""
        room = self.n_tokens - reserve
        start, group, size = 0, [], 0
        for i, tokens in enumerate(sequences):
            if not 0 < len(tokens) <= room:
                raise ValueError(f"a sequence of {len(tokens)} tokens does not fit")
            if group and (size + len(tokens) > room or len(group) == self.n_seq_max):
                yield start, group
                start, group, size = i, [], 0
            group.append(tokens)
            size += len(tokens)
        if group:
            yield start, group

    def _decode(self, group: list[list[int]], prefix: list[int] | None = None) -> list[int]:
        """One decode of ``group``, sequence k as sequence id k, from a clean cache. Without
        ``prefix`` every row is an output (pooling); with one, the prefix's rows belong to
        every sequence and only each sequence's last row is computed: their indices."""
        if self.memory:
            llama.llama_memory_clear(self.memory, True)
        batch = self._batch
        batch.clear()
        lasts: list[int] = []
        offset = 0
        if prefix is not None:
            every = list(range(len(group)))
            for pos, token in enumerate(prefix):
                batch.add(token, pos, every, False)
            offset = len(prefix)
        for seq, tokens in enumerate(group):
            last = len(tokens) - 1
            for pos, token in enumerate(tokens):
                row = batch.add(token, offset + pos, [seq], prefix is None or pos == last)
            lasts.append(row)
        status = int(llama.llama_decode(self.ctx, batch.native()))
        if status != 0:
            raise EngineError(f"llama_decode failed with status {status} (embeddings)")
        return lasts

    def close(self) -> None:
        self._batch.close()
        if self.ctx:
            llama.llama_free(self.ctx)
            self.ctx = None


def normalized(rows: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (L2), as sentence-transformers does; zero rows stay."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)
