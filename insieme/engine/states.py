"""The part of an engine's life that every backend lives the same way: starting the load,
waiting for it, ``drain``, the move to ``STOPPED``, and refusing requests unless ready
(``ServiceUnavailable``, saying why)."""

from __future__ import annotations

import asyncio

from insieme.engine.types import EngineState
from insieme.errors import ServiceUnavailable


class EngineLife:
    """Mixin for an engine with ``state``, ``failure`` and a ``_load`` coroutine (see
    ``insieme.engine.base``)."""

    state: EngineState
    failure: str | None
    _load_task: asyncio.Task[None] | None

    async def _load(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Begin loading; the server answers /health with 503 until the model is ready."""
        self._load_task = asyncio.create_task(self._load())

    async def wait_ready(self) -> None:
        """Return once the model is loaded; raise ``ConfigError`` (with the reason) if it
        cannot be."""
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    def drain(self) -> None:
        if self.state in (EngineState.LOADING, EngineState.READY):
            self.state = EngineState.DRAINING

    def _mark_stopped(self) -> None:
        if self.state is not EngineState.FAILED:
            self.state = EngineState.STOPPED

    def _refuse_unless_ready(self, loaded: bool) -> None:
        """Raise the ``ServiceUnavailable`` a request meets unless the engine is ready and
        ``loaded`` (what it runs requests on is in place)."""
        if self.state is EngineState.FAILED:
            raise ServiceUnavailable(self.failure or "the engine failed", code="engine_failed")
        if self.state is EngineState.DRAINING or self.state is EngineState.STOPPED:
            raise ServiceUnavailable("the engine is shutting down", code="shutting_down")
        if not loaded or self.state is not EngineState.READY:
            raise ServiceUnavailable("the model is still loading; retry shortly")
