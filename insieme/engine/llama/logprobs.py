"""Log probabilities beyond the sampled token's: top-k alternatives and scored prompts.

All of them come from the raw logits (before logit bias, penalties, grammar or temperature),
the same basis as ``LlamaRuntime.logprob``, so a sampled token's logprob equals its entry in
its own top list. Nothing here runs unless a request asks for it.

Prompt scoring (``echo`` with logprobs) needs the logits of every prompt position, which the
serving context never computes (it asks for the last row only, and reuses cached prefixes).
It runs on a second, single-sequence context on the same weights, created at the first such
request, on the engine thread: while it scores, the batch waits (about a prefill's time).
"""

from __future__ import annotations

import llama_cpp as llama
import numpy as np

from insieme.engine.llama.runtime import Batch, LlamaRuntime
from insieme.engine.types import PromptToken, TopLogprob
from insieme.errors import EngineError

# Prompt positions scored per llama_decode: bounds the logits buffer (rows × vocabulary).
SCORE_CHUNK = 128


class LogprobReader:
    """Top logprobs of a sampled row, token pieces for display, and prompt scoring."""

    def __init__(self, runtime: LlamaRuntime, max_model_len: int) -> None:
        self.runtime = runtime
        self.max_model_len = max_model_len
        self._pieces: dict[int, bytes] = {}
        self._ctx: llama.llama_context_p | None = None
        self._batch: Batch | None = None

    def piece(self, token: int) -> bytes:
        """The token's bytes, with special tokens spelled out (``<|im_end|>``)."""
        cached = self._pieces.get(token)
        if cached is None:
            runtime = self.runtime
            cached = (runtime.token_text(token).encode() if runtime.is_control(token)
                      else runtime.piece(token))
            self._pieces[token] = cached
        return cached

    def sampled(self, row: int, token: int, k: int) -> tuple[float, tuple[TopLogprob, ...]]:
        """The sampled token's logprob and the k most likely tokens of the row, best first."""
        logits = self.runtime.logits(row)
        peak = float(logits.max())
        norm = peak + float(np.log(np.exp(logits - peak).sum()))
        return float(logits[token]) - norm, self._top(logits, norm, k)

    def _top(self, logits: np.ndarray, norm: float, k: int) -> tuple[TopLogprob, ...]:
        if k <= 0:
            return ()
        best = np.argpartition(logits, -k)[-k:]
        best = best[np.argsort(-logits[best], kind="stable")]
        return tuple(TopLogprob(int(t), self.piece(int(t)), float(logits[t]) - norm)
                     for t in best)

    def prompt(self, tokens: list[int], k: int | None) -> tuple[PromptToken, ...]:
        """The prompt's tokens; scored (each with its logprob given the ones before) unless
        ``k`` is None. The first token has nothing before it: its logprob is None."""
        if k is None:
            return tuple(PromptToken(t, self.piece(t)) for t in tokens)
        scored = [PromptToken(tokens[0], self.piece(tokens[0]))]
        ctx, batch = self._context()
        llama.llama_memory_clear(llama.llama_get_memory(ctx), True)
        n_vocab = self.runtime.n_vocab
        # Row p predicts token p + 1; the last prompt row predicts the completion: skipped.
        for start in range(0, len(tokens) - 1, SCORE_CHUNK):
            rows = tokens[start : min(start + SCORE_CHUNK, len(tokens) - 1)]
            batch.clear()
            for i, token in enumerate(rows):
                batch.add(token, start + i, [0], True)
            status = llama.llama_decode(ctx, batch.native())
            if status != 0:
                raise EngineError(f"scoring the prompt failed (llama_decode {status})")
            logits = np.ctypeslib.as_array(llama.llama_get_logits(ctx),
                                           shape=(len(rows), n_vocab))
            peak = logits.max(axis=1)
            norms = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
            for i in range(len(rows)):
                target = tokens[start + i + 1]
                norm = float(norms[i])
                scored.append(PromptToken(target, self.piece(target),
                                          float(logits[i, target]) - norm,
                                          self._top(logits[i], norm, k)))
        return tuple(scored)

    def _context(self) -> tuple[llama.llama_context_p, Batch]:
        if self._ctx is None:
            runtime = self.runtime
            params = llama.llama_context_default_params()
            params.n_ctx = self.max_model_len
            params.n_batch = params.n_ubatch = SCORE_CHUNK
            params.n_seq_max = 1
            params.n_threads = params.n_threads_batch = runtime.shape.n_threads
            params.no_perf = True
            ctx = llama.llama_init_from_model(runtime.model, params)
            if not ctx:
                raise EngineError("llama.cpp could not create the prompt-scoring context")
            self._ctx = ctx
            self._batch = Batch(SCORE_CHUNK, 1)
        assert self._batch is not None
        return self._ctx, self._batch

    def close(self) -> None:
        """Free the scoring context; call before the runtime frees the model."""
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
