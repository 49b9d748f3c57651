"""The interface between the API layer and any engine (llama.cpp or the scripted fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from insieme.engine.types import EngineStats, GenerationRequest, ModelInfo, StepOutput


class OutputStream(Protocol):
    """The outputs of one request; closing it early cancels the request in the engine."""

    def __aiter__(self) -> AsyncIterator[StepOutput]: ...

    async def aclose(self) -> None: ...


class Engine(Protocol):
    """What the API layer needs from an engine.

    ``submit`` queues a request and returns its output stream at once; it raises
    ``QueueFullError`` synchronously when the waiting queue is full, so the API can answer
    429 before it starts a streamed response.
    """

    @property
    def info(self) -> ModelInfo: ...

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def render_chat(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> str: ...

    def submit(self, request: GenerationRequest) -> OutputStream: ...

    def stats(self) -> EngineStats: ...

    def inject_fault(self, request_id: str, after_tokens: int) -> None:
        """Test hook: fail this request inside the engine once it has ``after_tokens``
        tokens (call before ``submit``); only reachable with INSIEME_FAULT_INJECTION=1."""
        ...
