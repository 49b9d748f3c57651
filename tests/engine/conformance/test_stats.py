"""Stats count what an operator would: the requests running or waiting now, none when idle."""

from __future__ import annotations

import asyncio

import pytest

from insieme.engine.base import Engine
from insieme.engine.types import GenerationRequest
from tests.engine.conformance.streams import (
    REQUEST_SECONDS,
    chat_prompt,
    greedy,
    request_id,
    wait_idle,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_idle_engine_counts_nothing(engine: Engine) -> None:
    stats = await wait_idle(engine)
    assert stats.kv_sequences == 0


async def test_running_requests_are_counted_until_they_finish(engine: Engine) -> None:
    k = min(3, engine.info.max_num_seqs)
    prompt = await chat_prompt(engine, "Count from one to twenty.")
    streams = [await engine.submit(GenerationRequest(
        request_id(), prompt, greedy(16, ignore_eos=True))) for _ in range(k)]
    outputs = [aiter(stream) for stream in streams]
    open_choices = set(range(k))
    counted: list[int] = []  # running + waiting, sampled after each round of outputs
    async with asyncio.timeout(REQUEST_SECONDS):
        while open_choices:
            for i in sorted(open_choices):
                if (await anext(outputs[i])).finish_reason is not None:
                    open_choices.discard(i)
            if open_choices:
                stats = await engine.stats()
                counted.append(stats.running + stats.waiting)
    # The first round ends once every request has a token, 15 tokens before any finishes.
    assert counted and counted[0] == k, counted
    assert max(counted) <= k, counted
    await wait_idle(engine)
