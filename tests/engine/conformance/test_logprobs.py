"""Logprobs: each sampled token carries the k most likely tokens at its position."""

from __future__ import annotations

import math

import pytest

from insieme.engine.base import Engine
from insieme.engine.types import Capability
from tests.engine.conformance.streams import chat_prompt, generate, greedy

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_each_token_carries_its_top_logprobs(engine: Engine) -> None:
    if Capability.LOGPROBS not in engine.info.capabilities:
        pytest.skip("this backend does not give logprobs")
    k = 3
    prompt = await chat_prompt(engine, "Name a fruit.")
    [choice] = await generate(engine, prompt, greedy(6, logprobs=k))
    assert choice.tokens
    for token in choice.tokens:
        top = token.top_logprobs
        assert len(top) == k
        logprobs = [alternative.logprob for alternative in top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert all(logprob <= 0.0 for logprob in logprobs)
        assert all(0 <= alternative.id < engine.info.n_vocab for alternative in top)
        # Greedy: the token sampled is among the most likely, with the same logprob.
        sampled = [alternative for alternative in top if alternative.id == token.id]
        assert sampled, f"token {token.id} is not in its top {k}: {top}"
        assert math.isclose(sampled[0].logprob, token.logprob, abs_tol=1e-3)
