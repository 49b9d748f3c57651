"""Fault injection for tests, outside the production path (INSIEME_FAULT_INJECTION=1 only).

``insieme serve`` wraps its app in ``FaultHeader`` and its engine in ``FaultInjectingEngine``
when the variable is set, and never otherwise. A request carrying ``X-Insieme-Fault: N`` then
fails once it has N tokens; ``X-Insieme-Fault: engine:N`` kills the engine there. A backend
with a hook of its own (``_inject_fault``, as the llama.cpp engine's core has) fails through
its real per-sequence path, so the other requests in the batch must carry on; any other
backend gets the failure at the stream.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from insieme.engine.base import Engine, OutputStream
from insieme.engine.types import (
    ChatPrompt,
    Embedded,
    EngineState,
    EngineStats,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    Scored,
    StepOutput,
)

HEADER = "x-insieme-fault"


@dataclass(frozen=True, slots=True)
class Fault:
    after_tokens: int
    fatal: bool = False  # the engine itself dies

    @classmethod
    def parse(cls, value: str) -> Fault:
        fatal = value.startswith("engine:")
        return cls(int(value.removeprefix("engine:")), fatal)


_CURRENT: contextvars.ContextVar[Fault | None] = contextvars.ContextVar(
    "insieme_fault", default=None)


class FaultHeader:
    """ASGI middleware: the request's ``X-Insieme-Fault`` becomes the fault its engine calls
    see (a context variable, which the route's task inherits)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = Headers(scope=scope).get(HEADER) if scope["type"] == "http" else None
        if value is None:
            await self.app(scope, receive, send)
            return
        try:
            fault = Fault.parse(value)
        except ValueError:
            body = {"error": {"message": f"{HEADER} must be N or engine:N",
                              "type": "invalid_request_error", "param": None, "code": None}}
            await JSONResponse(body, status_code=400)(scope, receive, send)
            return
        token = _CURRENT.set(fault)
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(token)


class FaultInjectingEngine:
    """Any engine, failing the requests whose HTTP request asked for it."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    @property
    def state(self) -> EngineState:
        return self.inner.state

    @property
    def failure(self) -> str | None:
        return self.inner.failure

    async def start(self) -> None:
        await self.inner.start()

    async def wait_ready(self) -> None:
        await self.inner.wait_ready()

    def drain(self) -> None:
        self.inner.drain()

    async def stop(self) -> None:
        await self.inner.stop()

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return await self.inner.tokenize(text, add_special=add_special)

    async def render_chat(self, messages: list[dict[str, Any]], *,
                          tools: list[dict[str, Any]] | None = None) -> ChatPrompt:
        return await self.inner.render_chat(messages, tools=tools)

    async def stats(self) -> EngineStats:
        return await self.inner.stats()

    async def embed(self, inputs: list[str | list[int]], *,
                    truncate: int | None = None) -> Embedded:
        return await self.inner.embed(inputs, truncate=truncate)

    async def rerank(self, query: str, documents: list[str]) -> Scored:
        return await self.inner.rerank(query, documents)

    async def submit(self, request: GenerationRequest) -> OutputStream:
        fault = _CURRENT.get()
        hook = getattr(self.inner, "_inject_fault", None)
        if fault is not None and hook is not None:
            hook(request.request_id, fault.after_tokens, fatal=fault.fatal)
        stream = await self.inner.submit(request)
        if fault is None or hook is not None:
            return stream
        return _FailingStream(stream, fault.after_tokens, request.n)


class _FailingStream:
    """A stream that ends each choice with an error once it has ``after`` tokens."""

    def __init__(self, inner: OutputStream, after: int, n: int) -> None:
        self._inner = inner
        self._after = after
        self._n = n

    def __aiter__(self) -> AsyncIterator[StepOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StepOutput]:
        seen: dict[int, int] = {}
        failed: set[int] = set()
        async for output in self._inner:
            if output.index in failed:
                continue
            if seen.get(output.index, 0) >= self._after:
                failed.add(output.index)
                yield StepOutput(index=output.index, token=None, text="",
                                 finish_reason=FinishReason.ERROR,
                                 completion_tokens=seen[output.index],
                                 error="injected fault (X-Insieme-Fault)")
                if len(failed) == self._n:
                    break
                continue
            if output.token is not None:
                seen[output.index] = seen.get(output.index, 0) + 1
            if output.finish_reason is not None:
                failed.add(output.index)
            yield output
            if len(failed) == self._n:
                break
        await self._inner.aclose()  # whatever the engine still runs for it, nobody reads

    async def aclose(self) -> None:
        await self._inner.aclose()
