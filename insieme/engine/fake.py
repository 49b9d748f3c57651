"""A scripted engine for fast API-layer and CLI tests. It never stands in for the real
engine in a test that claims real model behaviour.

It "tokenises" one token per character and answers with a scripted reply, one word-piece per
step, honouring ``max_tokens``, stop strings, ``n``, cancellation and the queue bound, so the
whole HTTP surface can be exercised in milliseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from insieme.engine import tool_prompt
from insieme.engine.chat_template import ChatTemplate
from insieme.engine.stream import RequestStream
from insieme.engine.text import StopMatcher
from insieme.engine.types import (
    Capability,
    ChatPrompt,
    Embedded,
    EngineState,
    EngineStats,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    PromptToken,
    Scored,
    StepOutput,
    TokenInfo,
    TopLogprob,
)
from insieme.errors import ConfigError, InvalidRequestError, QueueFullError, ServiceUnavailable

# It cannot enforce a constraint; API tests of constraint plumbing pass ``ALL_CAPABILITIES``
# (the reply stays scripted: such tests check what reaches the engine, not the output).
DEFAULT_CAPABILITIES = frozenset({Capability.TOOLS, Capability.LOGPROBS,
                                  Capability.PROMPT_LOGPROBS, Capability.EMBEDDINGS,
                                  Capability.RERANK})
ALL_CAPABILITIES = frozenset(Capability)
DEFAULT_REPLY = "Hello! I am a scripted fake model. Ask me anything, and I will say this again."
_PIECES = re.compile(r"\s*\S+|\s+")
_WORDS = re.compile(r"\w+")
EMBEDDING_SIZE = 64


class FakeEngine:
    """Scripted engine: ``reply`` is a string or a function of the prompt text."""

    def __init__(
        self,
        reply: str | Callable[[str], str] = DEFAULT_REPLY,
        *,
        token_delay: float = 0.0,
        max_model_len: int = 2048,
        max_running: int = 16,
        max_queue: int = 64,
        start_delay: float = 0.0,
        capabilities: frozenset[Capability] = DEFAULT_CAPABILITIES,
    ) -> None:
        self._reply = reply
        self.token_delay = token_delay
        self.max_running = max_running
        self.max_queue = max_queue
        self._start_delay = start_delay
        self.state = EngineState.LOADING
        self.failure: str | None = None
        self._template = ChatTemplate(None)
        self.info = ModelInfo(name="scripted fake engine", max_model_len=max_model_len,
                              n_vocab=0x110000, max_num_seqs=max_running,
                              capabilities=capabilities, embedding_size=EMBEDDING_SIZE)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots: asyncio.Semaphore | None = None
        self.aborted: list[str] = []
        self.completed = 0
        self._queue_seconds: dict[str, float] = {}

    async def start(self) -> None:
        self._slots = asyncio.Semaphore(self.max_running)
        if self._start_delay:
            await asyncio.sleep(self._start_delay)
        self.state = EngineState.READY

    async def wait_ready(self) -> None:
        if self.state is EngineState.FAILED:
            raise ConfigError(self.failure or "the engine failed")

    def drain(self) -> None:
        if self.state in (EngineState.LOADING, EngineState.READY):
            self.state = EngineState.DRAINING

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self.state = EngineState.STOPPED

    def fail(self, reason: str) -> None:
        """Test hook: the engine dies as the real one's thread would."""
        self.state = EngineState.FAILED
        self.failure = reason
        for task in list(self._tasks.values()):
            task.cancel()

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._tokens(text)

    @staticmethod
    def _tokens(text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)

    async def render_chat(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> ChatPrompt:
        messages, tools = tool_prompt.prepare(self._template, messages, tools)
        text = self._template.render(messages, tools=tools)
        return ChatPrompt(text, self._tokens(text))

    async def stats(self) -> EngineStats:
        running = len(self._tasks)
        return EngineStats(running=min(running, self.max_running),
                           waiting=max(0, running - self.max_running),
                           kv_sequences=min(running, self.max_running),
                           open_requests=running)

    async def embed(self, inputs: list[str | list[int]], *,
                    truncate: int | None = None) -> Embedded:
        """Each input's words hashed into a unit vector: texts sharing words are close."""
        self._check_ready()
        limit = self.info.max_model_len
        vectors, tokens = [], 0
        for i, value in enumerate(inputs):
            text = value if isinstance(value, str) else self.detokenize(value)
            if len(text) > limit:
                if truncate is None:
                    raise InvalidRequestError(
                        f"input {i} has {len(text)} tokens; this model embeds at most {limit}",
                        param="input", code="context_length_exceeded")
                text = text[len(text) - (limit if truncate == -1 else truncate):]
            vector = [0.0] * EMBEDDING_SIZE
            for word in _words(text):
                vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % EMBEDDING_SIZE] += 1
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
            tokens += len(text)
        return Embedded(vectors, tokens)

    async def rerank(self, query: str, documents: list[str]) -> Scored:
        """The share of the query's words each document holds (a document cut to fit)."""
        self._check_ready()
        wanted = set(_words(query))
        cut = [d[: max(0, self.info.max_model_len - len(query))] for d in documents]
        scores = [len(wanted & set(_words(d))) / len(wanted) if wanted else 0.0 for d in cut]
        return Scored(scores, sum(len(query) + len(d) for d in cut))

    def _check_ready(self) -> None:
        if self.state is EngineState.FAILED:
            raise ServiceUnavailable(self.failure or "the engine failed", code="engine_failed")
        if self.state is not EngineState.READY:
            raise ServiceUnavailable(f"the engine is {self.state.value}",
                                     code="shutting_down" if self.state in (
                                         EngineState.DRAINING, EngineState.STOPPED) else None)

    async def submit(self, request: GenerationRequest) -> RequestStream:
        self._check_ready()
        if request.n > self.max_running:
            raise InvalidRequestError(
                f"n is {request.n}, but this server decodes at most {self.max_running} "
                "sequences at once (--max-num-seqs)", param="n", code="n_too_large")
        if len(self._tasks) >= self.max_running + self.max_queue:
            raise QueueFullError("the server's queue is full; retry shortly", retry_after=1)
        stream = RequestStream(request.request_id, request.n, self._abort)
        loop = asyncio.get_running_loop()
        self._tasks[request.request_id] = loop.create_task(self._run(request, stream))
        return stream

    def _abort(self, request_id: str) -> None:
        task = self._tasks.pop(request_id, None)
        if task is not None and not task.done():
            task.cancel()
            self.aborted.append(request_id)

    async def _run(self, request: GenerationRequest, stream: RequestStream) -> None:
        assert self._slots is not None
        arrived = time.monotonic()
        try:
            async with self._slots:
                self._queue_seconds[request.request_id] = time.monotonic() - arrived
                prompt = self.detokenize(request.prompt_tokens)
                reply = self._reply(prompt) if callable(self._reply) else self._reply
                for index in range(request.n):
                    await self._run_choice(request, stream, index, reply)
            self.completed += 1
        finally:
            self._tasks.pop(request.request_id, None)
            self._queue_seconds.pop(request.request_id, None)

    async def _run_choice(
        self, request: GenerationRequest, stream: RequestStream, index: int, reply: str
    ) -> None:
        params = request.sampling
        rng = random.Random(params.seed)
        pieces = _PIECES.findall(reply)
        stops = StopMatcher(params.stop)
        room = self.info.max_model_len - len(request.prompt_tokens)
        finish = FinishReason.STOP
        produced = 0
        echo = self._prompt(request) if params.echo and index == 0 else None

        def put(output: StepOutput) -> None:
            nonlocal echo
            if echo is not None:  # echo: the first output of choice 0 carries the prompt
                output, echo = replace(output, prompt=echo), None
            stream.put(output)

        for piece in pieces:
            if produced >= min(params.max_tokens, room):
                finish = FinishReason.LENGTH
                break
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            produced += 1
            token = self._token(piece, rng, params.logprobs)
            text, stopped = stops.feed(piece)
            if stopped:
                put(self._last(request, index, token, text, produced))
                return
            put(StepOutput(index=index, token=token, text=text))
        put(self._last(request, index, None, stops.flush(), produced, finish))

    @staticmethod
    def _token(piece: str, rng: random.Random, top: int | None) -> TokenInfo:
        """A plausible token: logprob <= 0 and, when asked, a sorted top list that holds it."""
        logprob = -rng.random()
        token_id = sum(map(ord, piece)) % 50000
        if top is None:
            return TokenInfo(id=token_id, text=piece, logprob=logprob, special=False)
        alternatives = [TopLogprob(token_id, piece.encode(), logprob)]
        alternatives += [TopLogprob(50000 + k, f"<alt{k}>".encode(), logprob - 1.0 - k)
                         for k in range(max(0, top - 1))]
        return TokenInfo(id=token_id, text=piece, logprob=logprob, special=False,
                         piece=piece.encode(), top_logprobs=tuple(alternatives[:top]))

    @staticmethod
    def _prompt(request: GenerationRequest) -> tuple[PromptToken, ...]:
        """The prompt's characters as tokens, with made-up logprobs when asked."""
        k = request.sampling.prompt_logprobs
        tokens = []
        for i, token in enumerate(request.prompt_tokens):
            piece = chr(token).encode()
            if k is None or i == 0:
                tokens.append(PromptToken(token, piece))
                continue
            logprob = -0.5 - (token % 7) / 7
            top = (TopLogprob(token, piece, logprob),
                   *(TopLogprob(50000 + j, f"<alt{j}>".encode(), logprob - 1.0 - j)
                     for j in range(max(0, k - 1))))
            tokens.append(PromptToken(token, piece, logprob, top[:k]))
        return tuple(tokens)

    def _last(
        self,
        request: GenerationRequest,
        index: int,
        token: TokenInfo | None,
        text: str,
        produced: int,
        finish: FinishReason = FinishReason.STOP,
    ) -> StepOutput:
        return StepOutput(
            index=index,
            token=token,
            text=text,
            finish_reason=finish,
            prompt_tokens=len(request.prompt_tokens),
            completion_tokens=produced,
            queue_seconds=self._queue_seconds.get(request.request_id),
        )


def _words(text: str) -> list[str]:
    return [word.lower() for word in _WORDS.findall(text)]
