"""Prompt-lookup speculation: the n-gram index and the draft-length policy (fast), and on the
real model: output identical with speculation on and off, rejected drafts leave no KV cells
behind, and an abort frees everything."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from insieme.config import EngineConfig, bundled_model_path
from insieme.engine.llama.engine import LlamaEngine
from insieme.engine.llama.speculation import (
    NgramIndex,
    SpecState,
    SpeculationConfig,
    min_acceptance,
)
from insieme.engine.types import GenerationRequest, SamplingParams, StepOutput

# -- the index and the policy -----------------------------------------------------------------


def test_the_index_proposes_what_followed_the_latest_longest_match() -> None:
    index = NgramIndex(lo=2, hi=3)
    tokens = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3]
    # "2 3" last occurred followed by 7; the 3-gram "1 2 3" occurred at the start, before 4.
    assert index.propose(tokens, 3) == [4, 5, 9]
    tokens += [4, 5]
    assert index.propose(tokens, 2) == [9, 2]  # "3 4 5" -> 9 2, found incrementally
    assert index.propose([5, 6, 7], 4) == []  # nothing occurred before


def test_the_tail_is_never_its_own_match() -> None:
    index = NgramIndex(lo=2, hi=2)
    assert index.propose([1, 2], 4) == []
    assert index.propose([1, 2, 1, 2], 4) == [1, 2]


def test_the_draft_is_as_long_as_its_positions_pay_for_their_rows() -> None:
    config = SpeculationConfig(num_speculative_tokens=16, row_cost=0.4)
    state = SpecState(NgramIndex(2, 4))
    state.acceptance = 0.9
    alone = state.length(config, width=1, room=100)
    wide = state.length(config, width=16, room=100)
    assert alone > wide >= 0
    assert state.length(config, width=1, room=3) == 3  # never past what is wanted
    state.acceptance = 0.2
    assert state.length(config, width=1, room=100) == 0  # off where it would not pay
    state.acceptance = 1.0
    assert state.length(config, width=1, room=100) == 16


def test_short_drafts_are_priced_by_what_the_first_extra_row_costs() -> None:
    # As measured on the bundled model on 2 cores: the first extra row costs the most.
    measured = SpeculationConfig(curve=((1, 1.0), (2, 1.63), (3, 2.39), (5, 3.25),
                                        (9, 5.06), (17, 7.66)))
    assert measured.step_cost(4) == pytest.approx((2.39 + 3.25) / 2)
    assert measured.step_cost(33) > measured.step_cost(17)
    state = SpecState(NgramIndex(2, 4))
    state.acceptance = 0.68  # free-form text: 1.68 tokens for 1.63 steps is not worth it
    assert state.length(measured, width=1, room=100) == 0
    state.acceptance = 0.95  # a copy: long drafts pay
    assert state.length(measured, width=1, room=100) >= 8


def test_the_floor_below_which_nothing_is_priced_drafts_exactly_as_pricing_would() -> None:
    # The engine skips pricing each k for a sequence under this floor: it must never skip
    # a draft that pricing would have sent.
    measured = SpeculationConfig(curve=((1, 1.0), (2, 1.96), (3, 2.92), (5, 3.69),
                                        (9, 5.65), (17, 10.01)))
    state = SpecState(NgramIndex(2, 4))
    for width in (1, 2, 5):
        floor = min_acceptance(measured, width)
        assert 0.5 < floor < 1.0
        for a in (floor - 0.05, floor - 1e-6):
            state.acceptance = a
            assert state.length(measured, width, room=100) == 0
        state.acceptance = min(1.0, floor + 1e-5)
        assert state.length(measured, width, room=100) > 0


def test_acceptance_follows_the_drafts_and_the_unsent_guesses() -> None:
    state = SpecState(NgramIndex(2, 4))
    start = state.acceptance
    state.judge(drafted=8, accepted=8)
    assert state.acceptance > start
    high = state.acceptance
    state.judge(drafted=8, accepted=0)
    assert state.acceptance < high
    low = state.acceptance
    for _ in range(30):
        state.shadow = 5
        state.judge_shadow(5)
    assert state.acceptance > 0.9 > low
    state.shadow = 5
    state.judge_shadow(6)
    assert state.shadow is None


# -- the real model ---------------------------------------------------------------------------

TEXT = ("The committee met on Tuesday to review the budget for the new library. After a long "
        "discussion, the members agreed to fund the reading room, the children's corner and a "
        "small cafe, but they postponed the decision on the rooftop garden until next spring.")
CODE = ("def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n"
        "    return total / len(xs)\n")
PROMPTS = [
    f"Repeat the following text exactly:\n\n{TEXT}",
    f"Rewrite this paragraph in the past tense:\n\n{TEXT}",
    f"Fix the bug in this function and return the whole function:\n\n{CODE}",
    "Convert this list to JSON: apples 3, pears 5, plums 7, figs 2, dates 9.",
    "Write a short poem about the sea at night.",
    "Why is the sky blue?",
]
_ids = itertools.count()


async def make_engine(speculative: str, **overrides: object) -> LlamaEngine:
    config = EngineConfig(model_path=str(bundled_model_path()), max_model_len=1024,
                          max_num_seqs=8, speculative=speculative,
                          **overrides)  # type: ignore[arg-type]
    engine = LlamaEngine(config)
    await engine.start()
    await engine.wait_ready()
    return engine


async def run(engine: LlamaEngine, prompt: str, **sampling: object) -> list[StepOutput]:
    tokens = (await engine.render_chat([{"role": "user", "content": prompt}])).tokens
    n = int(sampling.pop("n", 1))  # type: ignore[call-overload]
    params = SamplingParams(**{"temperature": 0.0, "max_tokens": 96, **sampling})  # type: ignore[arg-type]
    stream = await engine.submit(GenerationRequest(f"s{next(_ids)}", tokens, params, n=n))
    return [output async for output in stream]


def summary(outputs: list[StepOutput]) -> list[tuple[object, ...]]:
    """What a client sees of each choice: token ids, text, finish, usage."""
    choices = []
    for index in sorted({o.index for o in outputs}):
        mine = [o for o in outputs if o.index == index]
        choices.append(([o.token.id for o in mine if o.token is not None],
                        "".join(o.text for o in mine), mine[-1].finish_reason,
                        mine[-1].completion_tokens))
    return choices


def assert_kv_matches_tokens(engine: LlamaEngine) -> None:
    """Every KV sequence holds exactly the cells its owner or cached prefix says: a rejected
    draft token's cell left behind would show as a position past the end."""
    core = engine._core
    assert core is not None
    for slot in core.slots._slots:
        assert core.runtime.seq_pos_max(slot.seq_id) == len(slot.tokens()) - 1, slot.seq_id


async def idle(engine: LlamaEngine) -> None:
    for _ in range(200):
        stats = await engine.stats()
        if stats.running == 0 and stats.open_requests == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the engine did not go idle")


@pytest.mark.model
async def test_output_is_identical_with_speculation_on_and_off() -> None:
    cases: list[tuple[str, dict[str, object]]] = [(p, {}) for p in PROMPTS]
    cases += [(PROMPTS[0], {"temperature": 0.8, "seed": 7}),  # one draw per token either way
              (PROMPTS[1], {"logprobs": 2}),
              (PROMPTS[0], {"stop": ["rooftop"]}),
              (PROMPTS[2], {"max_tokens": 23, "ignore_eos": True}),
              (PROMPTS[3], {"n": 2, "temperature": 0.7, "seed": 3})]
    results: dict[str, list[list[tuple[object, ...]]]] = {}
    for mode in ("off", "ngram"):
        engine = await make_engine(mode)
        try:
            alone = [summary(await run(engine, p, **s)) for p, s in cases]
            together = await asyncio.gather(*(run(engine, p, **s) for p, s in cases))
            results[mode] = alone + [summary(o) for o in together]
            await idle(engine)
            assert_kv_matches_tokens(engine)
            stats = await engine.stats()
            if mode == "ngram":
                # It must have drafted and kept tokens, or this test would prove nothing.
                assert stats.spec_accepted_tokens > 100, stats
                assert stats.spec_draft_tokens > stats.spec_accepted_tokens
            else:
                assert stats.spec_drafts == 0
        finally:
            await engine.stop()
    for (prompt, sampling), off, on in zip(cases * 2, results["off"], results["ngram"],
                                          strict=True):
        assert on == off, (prompt[:40], sampling)


@pytest.mark.model
async def test_logprobs_are_the_same_with_speculation() -> None:
    runs = {}
    for mode in ("off", "ngram"):
        engine = await make_engine(mode)
        try:
            runs[mode] = await run(engine, PROMPTS[0], logprobs=3)
        finally:
            await engine.stop()
    for off, on in zip(runs["off"], runs["ngram"], strict=True):
        if off.token is None:
            continue
        assert on.token is not None and on.token.id == off.token.id
        assert on.token.logprob == pytest.approx(off.token.logprob, abs=1e-3)
        assert [t.id for t in on.token.top_logprobs] == [t.id for t in off.token.top_logprobs]


@pytest.mark.model
async def test_an_abort_in_the_middle_of_drafting_frees_everything() -> None:
    engine = await make_engine("ngram")
    try:
        tokens = (await engine.render_chat(
            [{"role": "user", "content": PROMPTS[0]}])).tokens
        for i in range(3):
            stream = await engine.submit(GenerationRequest(
                f"a{i}", tokens, SamplingParams(temperature=0.0, max_tokens=200,
                                                ignore_eos=True)))
            seen = 0
            async for output in stream:
                seen += output.token is not None
                if seen >= 20 + 7 * i:  # somewhere in a draft, as often as not
                    break
            await stream.aclose()
        await idle(engine)
        stats = await engine.stats()
        assert stats.kv_sequences == 0 and stats.spec_accepted_tokens > 0
        assert_kv_matches_tokens(engine)
        # And the cache it kept is sound: the same request again gives the same text.
        again = [summary(await run(engine, PROMPTS[0])) for _ in range(2)]
        assert again[0] == again[1]
    finally:
        await engine.stop()
