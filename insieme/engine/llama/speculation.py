"""Prompt-lookup (n-gram) speculation: guess a sequence's next tokens from its own text.

A sequence whose last few tokens occurred earlier in its prompt or output probably goes on
as it did there (a summary quoting its source, an edit of given code, a copy): those next
tokens are proposed as a draft, fed in the same ``llama_decode`` as every other sequence's
token, and kept as far as sampling agrees with them (see ``EngineCore``). Each output token is
still sampled from its own row of logits, so greedy output is the same as without drafts and
sampled output follows the same distribution (a draft that is one fixed guess is accepted
exactly when the sample equals it).

Drafting pays only where it is right often enough: on a CPU a row fed beside another costs
about half of a whole one-token step (the bundled model on 2 cores: 15.8 ms for one row,
+7 ms for each more), and in a wide batch every extra row costs as much as a token anyone
else decodes. So each sequence keeps an estimate of how often its
drafts hold (``acceptance``, updated also from the guesses it did not send), and a draft is
only as long as its positions are likely enough to be kept to pay for their rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

log = logging.getLogger("insieme.engine")

if TYPE_CHECKING:
    from insieme.engine.llama.runtime import Batch, LlamaRuntime
    from insieme.engine.llama.scheduler import Work
    from insieme.engine.llama.sequence import Sequence
    from insieme.engine.types import StepOutput

# How fast the acceptance estimate forgets: about the last 1 / (1 - DECAY) trials count.
DECAY = 0.9
# A new sequence's acceptance before it has shown any (drafting on its first guesses, whose
# rows then tell whether to go on).
PRIOR_ACCEPTANCE = 0.6
# How much more a draft must be expected to give than a plain step (sampling its rows,
# and the noise of the estimates, are not in the cost curve).
MARGIN = 0.05
# Steps without drafts after a decode found no KV room for them (a shared pool running full).
PAUSE_STEPS = 64


@dataclass(frozen=True, slots=True)
class SpeculationConfig:
    """``num_speculative_tokens``: the longest draft; n-grams of ``prompt_lookup_min`` to
    ``prompt_lookup_max`` tokens are looked up, longest first (vLLM's names)."""

    num_speculative_tokens: int = 16
    prompt_lookup_max: int = 4
    prompt_lookup_min: int = 2
    # What a decode of r rows costs relative to one row, as (rows, cost) points measured at
    # start (``step_costs``); without them, linear: each row ``row_cost`` of the fixed part.
    curve: tuple[tuple[int, float], ...] = ()
    row_cost: float = 1.0

    def step_cost(self, rows: int) -> float:
        """A decode of ``rows`` rows, in one-row decodes (piecewise linear over ``curve``)."""
        curve = self.curve
        if not curve:
            return (1.0 + self.row_cost * rows) / (1.0 + self.row_cost)
        for (r0, c0), (r1, c1) in zip(curve, curve[1:], strict=False):
            if rows <= r1:
                return c0 + (c1 - c0) * (rows - r0) / (r1 - r0)
        (r0, c0), (r1, c1) = curve[-2], curve[-1]
        return c1 + (c1 - c0) * (rows - r1) / (r1 - r0)


@dataclass(eq=False, slots=True)
class NgramIndex:
    """Where each n-gram of a token list last occurred, for every n in [lo, hi], kept up
    to date as the list grows (O(hi - lo) per token)."""

    lo: int
    hi: int
    # (n-gram) -> the index of the token that followed its latest occurrence
    _next: dict[tuple[int, ...], int] = field(default_factory=dict)
    _indexed: int = 0  # n-grams ending before this position are in ``_next``

    def update(self, tokens: list[int]) -> None:
        # An n-gram enters once the token after it is known: the tail's own occurrence is
        # never its own match.
        end = len(tokens) - 1
        nxt = self._next
        for i in range(max(self._indexed, self.lo), end + 1):
            for n in range(self.lo, min(self.hi, i) + 1):
                nxt[tuple(tokens[i - n:i])] = i
        self._indexed = max(self._indexed, end + 1)

    def propose(self, tokens: list[int], k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the longest
        matching tail n-gram; [] when the tail occurred nowhere before."""
        self.update(tokens)
        nxt = self._next
        for n in range(min(self.hi, len(tokens)), self.lo - 1, -1):
            start = nxt.get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start:start + k]
        return []


@dataclass(eq=False, slots=True)
class SpecState:
    """One sequence's drafting: its n-gram index, how often its guesses hold, and the
    draft in flight."""

    index: NgramIndex
    acceptance: float = PRIOR_ACCEPTANCE
    draft: list[int] = field(default_factory=list)  # fed in the current step
    shadow: int | None = None  # the first token guessed without being sent

    def length(self, config: SpeculationConfig, width: int, room: int) -> int:
        """How many tokens to draft this step, in a decode of ``width`` rows, with at most
        ``room`` more tokens wanted: the k that gives the step the most tokens per cost, where
        position j of a draft is kept with probability acceptance^j and the step's cost is
        ``config.step_cost``; 0 unless that beats a plain step by ``MARGIN``."""
        most = min(config.num_speculative_tokens, room)
        if most <= 0:
            return 0
        a = self.acceptance
        best_k, best = 0, width / config.step_cost(width) * (1.0 + MARGIN)
        expected, term = 1.0, 1.0
        for k in range(1, most + 1):
            term *= a
            expected += term
            rate = (width - 1 + expected) / config.step_cost(width + k)
            if rate > best:
                best_k, best = k, rate
        return best_k

    def judge(self, drafted: int, accepted: int) -> None:
        """A verified draft: ``accepted`` of its ``drafted`` tokens were kept. Every position
        up to the first rejected one is a trial (positions after it were never reached)."""
        trials = accepted + (1 if accepted < drafted else 0)
        for j in range(trials):
            self.acceptance = DECAY * self.acceptance + (1.0 - DECAY) * (j < accepted)

    def judge_shadow(self, token: int) -> None:
        """The token that came after an unsent guess: keeps the estimate honest while the
        sequence does not draft, so it can start again when its text turns predictable."""
        if self.shadow is not None:
            self.acceptance = DECAY * self.acceptance + (1.0 - DECAY) * (token == self.shadow)
            self.shadow = None


class Speculator:
    """Drafts for the engine loop (``EngineCore``), and the KV cells of rejected ones."""

    def __init__(self, config: SpeculationConfig, runtime: LlamaRuntime, batch: Batch,
                 token_budget: int, max_model_len: int) -> None:
        self._runtime = runtime
        self._token_budget = token_budget
        self._max_model_len = max_model_len
        self._batch = batch
        self.config = config
        self._paused = 0  # steps to go without drafts (they found no KV room)
        # decode width -> the least acceptance at which any draft pays (``min_acceptance``)
        self._floors: dict[int, float] = {}
        self.drafts = 0  # drafts verified
        self.draft_tokens = 0  # tokens in them
        self.accepted_tokens = 0  # of those, kept

    def calibrate(self) -> None:
        """Time this machine's decodes (``step_costs``). Called on the engine thread, before
        its first step: llama.cpp's compute threads belong to the thread that decodes."""
        self.config = replace(self.config, curve=step_costs(self._runtime, self._batch))
        self._floors.clear()
        log.info("speculation: ngram drafts of up to %d tokens; decodes of %s rows cost %s "
                 "one-row decodes here", self.config.num_speculative_tokens,
                 "/".join(str(r) for r, _ in self.config.curve),
                 "/".join(f"{c:.2f}" for _, c in self.config.curve))

    def state(self) -> SpecState:
        """A new sequence's drafting state."""
        return SpecState(NgramIndex(self.config.prompt_lookup_min,
                                    self.config.prompt_lookup_max))

    def draft(self, work: list[Work]) -> None:
        """Give each sequence that samples this step its draft (often none), within the
        step's token budget; a guess too unlikely to send is kept as a shadow to judge."""
        config = self.config
        width = sum(item.count for item in work)
        floor = self._floors.get(width)
        if floor is None:
            floor = self._floors[width] = min_acceptance(config, width)
        room = self._token_budget - width
        if self._paused:
            self._paused -= 1
            room = 0
        if len(work) > 1 and not self._runtime.shape.kv_unified:
            # With a KV stream per sequence llama.cpp splits a batch into ubatches that take
            # equal tokens from each sequence: one sequence's draft makes extra passes over
            # the whole model (free-form at 16 clients: 0.92-0.96x with drafts allowed).
            room = 0
        for item in work:
            seq, state = item.seq, item.seq.spec
            if state is None:
                continue
            state.draft = []
            state.shadow = None
            # A group leader's row is sampled by its followers too: no draft rows for it.
            if not item.sample or seq.followers or room <= 0:
                continue
            # Never past max_tokens or the context: those tokens would be thrown away.
            wanted = min(seq.request.sampling.max_tokens - seq.num_generated,
                         self._max_model_len - len(seq.tokens)) - 1
            # Most steps of most text: too unlikely to pay, no need to price each k.
            k = 0 if state.acceptance < floor else state.length(config, width, min(wanted, room))
            guess = state.index.propose(seq.tokens, max(k, 1))
            if not guess:
                continue
            if k == 0:
                state.shadow = guess[0]
                continue
            state.draft = guess[:k]
            room -= len(state.draft)

    def drop(self, work: list[Work]) -> bool:
        """Forget this step's drafts (its decode did not run: a shared KV pool may have no
        room for them) and draft nothing for a while; True if there were any."""
        dropped = False
        for item in work:
            state = item.seq.spec
            if state is not None and state.draft:
                state.draft = []
                dropped = True
        if dropped:
            self._paused = PAUSE_STEPS
        return dropped

    def verify(self, seq: Sequence, rows: list[int],
               sample: Callable[[Sequence, int], StepOutput]) -> list[StepOutput]:
        """Sample ``seq``'s rows (its next token's, then one per draft token) in order while
        the samples agree with its draft: each kept draft token's KV cell stays, the first
        disagreement's sample is the step's last token, and the cells of the draft tokens
        after it are removed. ``sample`` is the engine's own per-row sampling."""
        state = seq.spec
        assert state is not None and seq.slot is not None
        draft, slot = state.draft, seq.slot
        # The step counted the next token's cell; a draft token's counts once it is kept.
        first_draft_pos = seq.num_computed
        accepted = 0
        outputs = []
        for j, row in enumerate(rows):
            output = sample(seq, row)
            outputs.append(output)
            if output.finish_reason is not None or j == len(draft):
                break
            if seq.tokens[-1] != draft[j]:
                break
            accepted += 1
            seq.num_computed += 1
        # A sequence that finished here has given its slot up, keeping (as its cached
        # prefix) just the cells counted: the rejected ones go either way.
        if accepted < len(draft):
            self._runtime.seq_rm(slot, first_draft_pos + accepted, -1)
        self._settle(state, accepted)
        return outputs

    def _settle(self, state: SpecState, accepted: int) -> None:
        drafted = len(state.draft)
        state.judge(drafted, accepted)
        state.draft = []
        self.drafts += 1
        self.draft_tokens += drafted
        self.accepted_tokens += accepted


def min_acceptance(config: SpeculationConfig, width: int) -> float:
    """The least acceptance at which a sequence in a decode of ``width`` rows drafts at all
    (``SpecState.length`` with the longest draft allowed; it grows with acceptance)."""
    probe = SpecState(NgramIndex(config.prompt_lookup_min, config.prompt_lookup_max))
    lo, hi = 0.0, 1.0
    for _ in range(24):
        probe.acceptance = (lo + hi) / 2
        if probe.length(config, width, config.num_speculative_tokens):
            hi = probe.acceptance
        else:
            lo = probe.acceptance
    return lo


CURVE_ROWS = (1, 2, 3, 5, 9, 17)


def step_costs(runtime: LlamaRuntime, batch: Batch) -> tuple[tuple[int, float], ...]:
    """(rows, cost relative to one row) for decodes of ``CURVE_ROWS`` rows, timed here on KV
    sequence 0 (empty at start, and emptied again), the fastest of several tries after a
    warm-up of each; () if a decode fails. The first extra row costs the most (on the
    bundled model on 2 cores: 1 row 15.8 ms, 2 rows 25.7, 17 rows 121), which a straight
    line through 1 and 9 rows misses."""
    token = runtime.bos_id if runtime.bos_id >= 0 else 0
    best = dict.fromkeys(CURVE_ROWS, float("inf"))
    try:
        for attempt in range(5):
            for rows in CURVE_ROWS:
                batch.clear()
                for pos in range(rows):
                    batch.add(token, pos, [0], True)
                started = time.perf_counter()
                if runtime.decode(batch) != 0:
                    return ()
                if attempt >= 1:  # the first of each size builds its compute graph
                    best[rows] = min(best[rows], time.perf_counter() - started)
                runtime.seq_rm(0, 0, -1)
    finally:
        runtime.seq_rm(0, 0, -1)
        batch.clear()
    one = best[1]
    costs, floor = [], 1.0
    for rows in CURVE_ROWS:
        floor = max(floor, best[rows] / one)  # never cheaper for more rows
        costs.append((rows, floor))
    return tuple(costs)
