"""Each sequence's sampler: a llama.cpp sampler chain (penalties, logit bias, top-k, top-p,
min-p, temperature, then a draw or greedy) and, for constrained output, a grammar before it.
Split from ``runtime`` (the context, batches and the KV cache), the other module that
calls llama-cpp-python's ctypes API to generate.
"""

from __future__ import annotations

import ctypes
import math

import llama_cpp as llama
import numpy as np

from insieme.engine.types import SamplingParams
from insieme.errors import EngineError

# Tokens the repetition/frequency/presence penalties look back over (llama-server's default).
PENALTY_LAST_N = 64
# Tokens a grammar redraw considers first (see Sampler._sample_constrained).
SHORTLIST = 1024
# llama_token_data as numpy sees it, to hand llama.cpp a candidate array without a Python loop.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GrammarPrototype:
    """A request's grammar parsed once, in its start state; each of the request's ``n``
    sequences samples with a copy (a clone costs about 1/25 of a parse, which on the engine
    thread took ~14 ms for a 240 KB grammar here)."""

    __slots__ = ("_text", "_sampler")

    def __init__(self, text: str) -> None:
        self._text = text
        self._sampler: llama.llama_sampler_p | None = None

    def copy(self, vocab: llama.llama_vocab_p) -> llama.llama_sampler_p:
        if self._sampler is None:
            self._sampler = llama.llama_sampler_init_grammar(vocab, self._text.encode(), b"root")
            if not self._sampler:
                raise EngineError("llama.cpp could not parse the output grammar")
        return llama.llama_sampler_clone(self._sampler)

    def __del__(self) -> None:
        if self._sampler:
            llama.llama_sampler_free(self._sampler)
            self._sampler = None


class Sampler:
    """A per-sequence llama.cpp sampler chain: logit bias → penalties → top-k → top-p →
    min-p → temp → dist (or greedy), and, for constrained output, a grammar before it.

    Built at the first ``sample``, where the context (and so the vocabulary a grammar needs)
    is at hand. Without a grammar ``llama_sampler_sample`` does everything in C. The
    sequences of one request share its ``GrammarPrototype`` (``grammar``), if it has one.
    """

    __slots__ = ("_chain", "_grammar", "_params", "_n_vocab", "_prototype")

    def __init__(self, params: SamplingParams, n_vocab: int,
                 grammar: GrammarPrototype | None = None) -> None:
        self._params = params
        self._n_vocab = n_vocab
        self._prototype = grammar
        self._chain: llama.llama_sampler_p | None = None
        self._grammar: llama.llama_sampler_p | None = None

    def _build(self, ctx: llama.llama_context_p) -> llama.llama_sampler_p:
        params, n_vocab = self._params, self._n_vocab
        if self._prototype is not None:
            vocab = llama.llama_model_get_vocab(llama.llama_get_model(ctx))
            self._grammar = self._prototype.copy(vocab)
            self._prototype = None  # the last sequence to copy it frees the parsed grammar
        chain_params = llama.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        chain = llama.llama_sampler_chain_init(chain_params)
        add = llama.llama_sampler_chain_add
        if params.logit_bias:
            biases = (llama.llama_logit_bias * len(params.logit_bias))(
                *(llama.llama_logit_bias(token, bias) for token, bias in params.logit_bias))
            add(chain, llama.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias),
                                                           biases))
        if (params.repetition_penalty != 1.0 or params.frequency_penalty
                or params.presence_penalty):
            add(chain, llama.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, params.repetition_penalty,
                params.frequency_penalty, params.presence_penalty))
        if params.greedy:
            add(chain, llama.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(chain, llama.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(chain, llama.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(chain, llama.llama_sampler_init_min_p(params.min_p, 1))
            add(chain, llama.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else llama.LLAMA_DEFAULT_SEED
            add(chain, llama.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self._chain = chain
        return chain

    def sample(self, ctx: llama.llama_context_p, row: int) -> int:
        chain = self._chain or self._build(ctx)
        if self._grammar is None:
            return int(llama.llama_sampler_sample(chain, ctx, row))
        return self._sample_constrained(chain, self._grammar, ctx, row)

    def _sample_constrained(self, chain: llama.llama_sampler_p,
                            grammar: llama.llama_sampler_p, ctx: llama.llama_context_p,
                            row: int) -> int:
        """llama.cpp's own shortcut (common/sampling.cpp): draw as if unconstrained, and
        only when the grammar rejects that token, redraw among the tokens it allows; the
        distribution is the same. Checking the grammar against all ~50k tokens costs ~20 ms
        here, so the redraw looks at the SHORTLIST most likely ones first (all of them when
        none fits): exact for greedy, and for sampling it leaves out a tail far below any
        top-k. Both then accept the token, which advances the grammar's state."""
        params = self._params
        logits = np.ctypeslib.as_array(llama.llama_get_logits_ith(ctx, row),
                                       shape=(self._n_vocab,))
        if params.repetition_penalty == 1.0 and not (params.frequency_penalty
                                                     or params.presence_penalty):
            # No sampler in the chain keeps state: accepting a rejected draw changes nothing.
            token = int(llama.llama_sampler_sample(chain, ctx, row))
        else:
            drawn = self._draw(logits, None, chain)
            assert drawn is not None  # only a grammar rules candidates out
            token = drawn
        single = llama.llama_token_data(token, 0.0, 0.0)
        llama.llama_sampler_apply(grammar, ctypes.byref(
            llama.llama_token_data_array(ctypes.pointer(single), 1, -1, False)))
        if single.logit == -math.inf:
            shortlist = np.argpartition(logits, -SHORTLIST)[-SHORTLIST:]
            if params.logit_bias:  # a raised token may lie outside the raw shortlist
                biased = np.array([t for t, _ in params.logit_bias], dtype=shortlist.dtype)
                shortlist = np.union1d(shortlist, biased)
            drawn = self._draw(logits, shortlist, grammar, chain)
            if drawn is None:
                drawn = self._draw(logits, None, grammar, chain)
            if drawn is None:
                raise EngineError("the output grammar allows no token here")
            token = drawn
        llama.llama_sampler_accept(grammar, token)
        llama.llama_sampler_accept(chain, token)
        return token

    @staticmethod
    def _draw(logits: np.ndarray, ids: np.ndarray | None, *samplers: llama.llama_sampler_p
              ) -> int | None:
        """Run ``samplers`` over the candidates ``ids`` (all tokens when None); None when the
        first of them (the grammar) rules every candidate out."""
        if ids is None:
            ids = np.arange(len(logits), dtype=np.int32)
        candidates = np.empty(len(ids), _TOKEN_DATA)
        candidates["id"] = ids
        candidates["logit"] = logits[ids]
        candidates["p"] = 0.0
        array = llama.llama_token_data_array(
            candidates.ctypes.data_as(llama.llama_token_data_p), len(candidates), -1, False)
        for k, sampler in enumerate(samplers):
            llama.llama_sampler_apply(sampler, ctypes.byref(array))
            if k == 0 and len(samplers) > 1 and not np.isfinite(candidates["logit"]).any():
                return None
        assert 0 <= array.selected < array.size
        return int(array.data[array.selected].id)

    def close(self) -> None:
        if self._chain:
            llama.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            llama.llama_sampler_free(self._grammar)
            self._grammar = None

    def __del__(self) -> None:
        self.close()
