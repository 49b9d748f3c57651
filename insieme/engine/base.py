"""The interface between the API layer and any engine (llama.cpp or the scripted fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from insieme.engine.types import (
    ChatPrompt,
    EngineState,
    EngineStats,
    GenerationRequest,
    ModelInfo,
    StepOutput,
)


class OutputStream(Protocol):
    """The outputs of one request; closing it early cancels the request in the engine."""

    def __aiter__(self) -> AsyncIterator[StepOutput]: ...

    async def aclose(self) -> None: ...


class Engine(Protocol):
    """What the API layer needs from an engine.

    ``submit`` queues a request and returns its output stream at once; it raises
    ``QueueFullError`` synchronously when the waiting queue is full, and
    ``InvalidRequestError`` for a request it could never run (``n`` above the sequences it
    decodes at once), so the API can answer before it starts a streamed response.
    """

    @property
    def info(self) -> ModelInfo: ...

    @property
    def ready(self) -> bool: ...

    @property
    def state(self) -> EngineState: ...

    @property
    def failure(self) -> str | None:
        """Why the engine is ``FAILED``; None otherwise."""
        ...

    async def start(self) -> None: ...

    async def wait_ready(self) -> None:
        """Return once the engine is ready; raise ``ConfigError`` if it cannot become so."""
        ...

    async def stop(self) -> None: ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """A raw prompt's tokens: special token text in it becomes special tokens."""
        ...

    def render_chat(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> ChatPrompt:
        """The conversation through the chat template, as text and tokens; only the
        template's own markup becomes special tokens, never text the client sent."""
        ...

    def submit(self, request: GenerationRequest) -> OutputStream: ...

    def stats(self) -> EngineStats: ...

    def inject_fault(self, request_id: str, after_tokens: int, *, fatal: bool = False) -> None:
        """Test hook: fail this request inside the engine once it has ``after_tokens``
        tokens (call before ``submit``); with ``fatal`` the engine itself dies there. Only
        reachable with INSIEME_FAULT_INJECTION=1."""
        ...
