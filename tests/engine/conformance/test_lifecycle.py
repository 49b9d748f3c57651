"""An engine's life: LOADING → READY (or FAILED, saying why) → DRAINING → STOPPED, and only
a ready engine takes requests. Each test builds its own engine, since it changes its state."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from insieme.engine.types import EngineState, FinishReason, GenerationRequest
from insieme.errors import ConfigError, ServiceUnavailable
from tests.engine.conformance.backends import LOAD_SECONDS, Backend, started
from tests.engine.conformance.streams import chat_prompt, generate, greedy, request_id

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_start_makes_it_ready_and_stop_stops_it(backend: Backend) -> None:
    engine = await backend.make()
    assert engine.state is EngineState.LOADING
    with pytest.raises(ServiceUnavailable):
        await engine.submit(GenerationRequest(request_id(), [1, 2, 3], greedy(1)))
    await started(engine)
    try:
        assert engine.state is EngineState.READY
        assert engine.failure is None
        [choice] = await generate(engine, await chat_prompt(engine, "Hi!"), greedy(2))
        assert choice.last.finish_reason is not None
    finally:
        await engine.stop()
    assert engine.state is EngineState.STOPPED


async def test_drain_refuses_new_requests_and_finishes_the_running_ones(
        backend: Backend) -> None:
    engine = await started(await backend.make())
    try:
        prompt = await chat_prompt(engine, "Count to ten.")
        running = await engine.submit(GenerationRequest(
            request_id(), prompt, greedy(8, ignore_eos=True)))
        outputs = aiter(running)
        first = await anext(outputs)
        engine.drain()
        assert engine.state is EngineState.DRAINING
        with pytest.raises(ServiceUnavailable):
            await engine.submit(GenerationRequest(request_id(), prompt, greedy(2)))
        rest = [output async for output in outputs]
        last = rest[-1] if rest else first
        assert last.finish_reason is FinishReason.LENGTH
        assert last.completion_tokens == 8
    finally:
        await engine.stop()
    assert engine.state is EngineState.STOPPED


async def test_a_failed_load_says_why(backend: Backend, tmp_path: Path) -> None:
    if backend.make_broken is None:
        pytest.skip("this backend has no way to make its load fail")
    engine, cause = await backend.make_broken(tmp_path)
    await engine.start()
    try:
        with pytest.raises(ConfigError, match=re.escape(cause)):
            async with asyncio.timeout(LOAD_SECONDS):
                await engine.wait_ready()
        assert engine.state is EngineState.FAILED
        assert engine.failure is not None and cause in engine.failure
        with pytest.raises(ServiceUnavailable):
            await engine.submit(GenerationRequest(request_id(), [1, 2, 3], greedy(1)))
    finally:
        await engine.stop()
