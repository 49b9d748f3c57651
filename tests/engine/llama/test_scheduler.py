"""Scheduling policy on the stand-in KV memory of test_kv_slots: how many prompt tokens a
step feeds, with and without the long-prefill cap."""

from __future__ import annotations

from insieme.engine.llama.kv_slots import SlotManager
from insieme.engine.llama.scheduler import Scheduler
from insieme.engine.llama.sequence import sequences_for
from insieme.engine.types import GenerationRequest, SamplingParams
from tests.engine.llama.test_kv_slots import N_SLOTS, FakeKV


def leader(request_id: str, prompt_len: int):  # type: ignore[no-untyped-def]
    request = GenerationRequest(request_id, list(range(1, prompt_len + 1)),
                                SamplingParams(max_tokens=8))
    return sequences_for(request)[0]


def fed(scheduler: Scheduler) -> dict[str, int]:
    """Run one step's bookkeeping as the core would; tokens fed per request."""
    work = scheduler.schedule()
    for item in work:
        item.seq.num_computed += item.count
        if item.sample:
            item.seq.tokens.append(7)  # the sampled token
    return {item.seq.request_id: item.count for item in work}


def test_a_long_prompt_is_fed_in_small_chunks_while_others_decode() -> None:
    slots = SlotManager(FakeKV(), N_SLOTS, prefix_caching=False)  # type: ignore[arg-type]
    scheduler = Scheduler(slots, N_SLOTS, token_budget=512, long_prefill_threshold=32)
    scheduler.add(leader("short", 20))
    assert fed(scheduler) == {"short": 20}  # alone: the whole prompt in one step
    scheduler.add(leader("long", 1000))
    scheduler.add(leader("brief", 30))
    # "short" decodes, so the long prompt gets 32 tokens a step; a short one goes in whole.
    assert fed(scheduler) == {"short": 1, "long": 32, "brief": 30}
    assert fed(scheduler) == {"short": 1, "brief": 1, "long": 32}


def test_the_chunk_may_be_smaller_than_the_threshold() -> None:
    slots = SlotManager(FakeKV(), N_SLOTS, prefix_caching=False)  # type: ignore[arg-type]
    scheduler = Scheduler(slots, N_SLOTS, token_budget=512, long_prefill_threshold=64,
                          long_prefill_chunk=4)
    scheduler.add(leader("short", 20))
    fed(scheduler)
    scheduler.add(leader("long", 1000))
    scheduler.add(leader("chat", 60))  # at most the threshold: in one go
    assert fed(scheduler) == {"short": 1, "long": 4, "chat": 60}


def test_without_decoders_or_a_cap_prefill_takes_the_budget() -> None:
    slots = SlotManager(FakeKV(), N_SLOTS, prefix_caching=False)  # type: ignore[arg-type]
    capped = Scheduler(slots, N_SLOTS, token_budget=512, long_prefill_threshold=32)
    capped.add(leader("long", 1000))
    assert fed(capped) == {"long": 512}  # nobody to protect: full speed
    slots = SlotManager(FakeKV(), N_SLOTS, prefix_caching=False)  # type: ignore[arg-type]
    uncapped = Scheduler(slots, N_SLOTS, token_budget=512)
    uncapped.add(leader("short", 20))
    fed(uncapped)
    uncapped.add(leader("long", 1000))
    assert fed(uncapped) == {"short": 1, "long": 511}
