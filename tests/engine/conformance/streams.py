"""Helpers of the conformance suite: prompts, whole completions read off a stream, and
waiting for an engine to go idle. Written against the ``Engine`` protocol only."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from insieme.engine.base import Engine
from insieme.engine.types import (
    EngineStats,
    GenerationRequest,
    SamplingParams,
    StepOutput,
    TokenInfo,
)

# Far longer than any request here needs: a stuck engine fails its test instead of hanging.
REQUEST_SECONDS = 60.0
_request_ids = itertools.count()


def request_id() -> str:
    return f"conformance-{next(_request_ids)}"


async def chat_prompt(engine: Engine, question: str) -> list[int]:
    """The tokens of a one-message conversation asking ``question``."""
    prompt = await engine.render_chat([{"role": "user", "content": question}])
    return prompt.tokens


def greedy(max_tokens: int, **overrides: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **overrides)


@dataclass
class ChoiceOutputs:
    """Everything one choice streamed, in order."""

    outputs: list[StepOutput] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(output.text for output in self.outputs)

    @property
    def tokens(self) -> list[TokenInfo]:
        return [output.token for output in self.outputs if output.token is not None]

    @property
    def last(self) -> StepOutput:
        return self.outputs[-1]


async def generate(engine: Engine, prompt: list[int], sampling: SamplingParams,
                   *, n: int = 1) -> list[ChoiceOutputs]:
    """Submit a request and read its stream to the end: the outputs of each choice."""
    choices: dict[int, ChoiceOutputs] = {}
    async with asyncio.timeout(REQUEST_SECONDS):
        stream = await engine.submit(GenerationRequest(request_id(), prompt, sampling, n=n))
        async for output in stream:
            assert output.error is None, output.error
            choices.setdefault(output.index, ChoiceOutputs()).outputs.append(output)
    return [choices[index] for index in sorted(choices)]


async def wait_idle(engine: Engine, within: float = 5.0) -> EngineStats:
    """The engine's stats once it runs, queues and tracks no request; fails after ``within``
    seconds with the last stats seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        stats = await engine.stats()
        if stats.running == stats.waiting == stats.open_requests == 0:
            return stats
        assert loop.time() < deadline, f"still busy after {within}s: {stats}"
        await asyncio.sleep(0.02)
