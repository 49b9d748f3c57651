"""The interface between the API layer and any engine: the llama.cpp backend, the scripted
fake, and the backends to come (vLLM, Ray replicas). Every call that may do real work is
async, since for a remote replica it is a network call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from insieme.engine.types import (
    ChatPrompt,
    Embedded,
    EngineState,
    EngineStats,
    GenerationRequest,
    ModelInfo,
    Scored,
    StepOutput,
)


class OutputStream(Protocol):
    """The outputs of one request; closing it early cancels the request in the engine."""

    def __aiter__(self) -> AsyncIterator[StepOutput]: ...

    async def aclose(self) -> None: ...


class Engine(Protocol):
    """What the API layer needs from an engine.

    ``state`` moves ``LOADING`` → ``READY`` (or ``FAILED`` with ``failure`` saying why) →
    ``DRAINING`` → ``STOPPED``; only a ready engine takes requests, the others refuse with
    ``ServiceUnavailable``. ``submit`` queues a request and returns its output stream; it
    raises before anything is streamed: ``QueueFullError`` when the queue is full, and
    ``InvalidRequestError`` (naming the field) for a request this engine can never run: ``n``
    above the sequences it decodes at once, a constraint it cannot enforce.
    """

    @property
    def info(self) -> ModelInfo: ...

    @property
    def state(self) -> EngineState: ...

    @property
    def failure(self) -> str | None:
        """Why the engine is ``FAILED``; None otherwise."""
        ...

    async def start(self) -> None:
        """Begin loading (returns at once; ``wait_ready`` waits for the load)."""
        ...

    async def wait_ready(self) -> None:
        """Return once the engine is ready; raise ``ConfigError`` if it cannot become so."""
        ...

    def drain(self) -> None:
        """Take no new requests (``DRAINING``); the ones running carry on."""
        ...

    async def stop(self) -> None: ...

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """A raw prompt's tokens: special token text in it becomes special tokens."""
        ...

    async def render_chat(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> ChatPrompt:
        """The conversation through the model's chat template, as text and tokens: only the
        template's own markup becomes special tokens, never text the client sent. ``tools``
        go to a template that renders them, else into the generic tool prompt."""
        ...

    async def submit(self, request: GenerationRequest) -> OutputStream: ...

    async def embed(self, inputs: list[str | list[int]], *,
                    truncate: int | None = None) -> Embedded:
        """A vector per input (text, tokenised as the model expects, or token ids), pooled
        and normalised as the model expects. An input longer than the model takes raises
        ``InvalidRequestError`` (param ``input``), unless ``truncate`` keeps only its last
        ``truncate`` tokens (-1: as many as the model takes). Only with
        ``Capability.EMBEDDINGS``; ``QueueFullError`` when too much waits already."""
        ...

    async def rerank(self, query: str, documents: list[str]) -> Scored:
        """How relevant each document is to ``query``; a document too long to score with
        the query is cut at its end. Only with ``Capability.RERANK``."""
        ...

    async def stats(self) -> EngineStats: ...
