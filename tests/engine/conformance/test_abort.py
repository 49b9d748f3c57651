"""A client that goes away: closing a request's stream early frees the request."""

from __future__ import annotations

import pytest

from insieme.engine.base import Engine
from insieme.engine.types import GenerationRequest
from tests.engine.conformance.streams import chat_prompt, greedy, request_id, wait_idle

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_closing_the_stream_frees_the_request(engine: Engine) -> None:
    prompt = await chat_prompt(engine, "Write a long story about a dragon.")
    # As long as the context allows (seconds of decoding on a CPU): left to run, the request
    # would outlast the wait below.
    room = engine.info.max_model_len - len(prompt)
    stream = await engine.submit(GenerationRequest(
        request_id(), prompt, greedy(room, ignore_eos=True)))
    outputs = aiter(stream)
    for _ in range(2):
        assert (await anext(outputs)).finish_reason is None
    await stream.aclose()
    await wait_idle(engine, within=2.0)
