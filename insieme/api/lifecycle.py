"""Graceful shutdown: on SIGTERM stop admitting, let running requests finish, then stop.

``GracefulServer`` is uvicorn's server with one change to its signal handling: the first
SIGTERM (or Ctrl-C) starts ``Lifecycle.drain`` instead of closing the listening socket, so
new requests get a clear 503 while the ones in flight run to the end of ``--shutdown-grace``.
Streams still open then end with an error event; the server exits 0 once they are gone. A
second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Protocol

import uvicorn

from insieme.api.tracking import RequestRecord, StreamRegistry
from insieme.errors import ServiceUnavailable

log = logging.getLogger("insieme.api")

# After the grace period: how long ended streams get to send their error event.
FLUSH_SECONDS = 5.0


class Lifecycle:
    """Which requests are in flight, and whether new ones are still admitted."""

    def __init__(self) -> None:
        self.draining = False
        self.active: set[RequestRecord] = set()
        self.streams = StreamRegistry()

    async def drain(self, grace: float) -> None:
        """Stop admitting; wait up to ``grace`` seconds for requests in flight, then end them."""
        self.draining = True
        log.info("shutting down: %d request(s) in flight get up to %g s to finish",
                 len(self.active), grace)
        if not await self._wait_idle(grace):
            log.warning("shutdown grace over: ending %d request(s)", len(self.active))
            self.streams.expire_all(ServiceUnavailable(
                "the server is shutting down and this request ran past its grace period",
                code="shutting_down"))
            await self._wait_idle(FLUSH_SECONDS)

    async def _wait_idle(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.active and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self.active


class Loading(Protocol):
    """What the server watches as it starts: an engine, or the model registry."""

    async def wait_ready(self) -> None: ...

    def drain(self) -> None: ...


class GracefulServer(uvicorn.Server):
    """uvicorn that drains before it closes; ``request_shutdown`` works from any thread.

    It also watches the engine load: a model that cannot be loaded stops the server, and
    ``load_failure`` then says why (the CLI prints it and exits non-zero).
    """

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace: float,
                 engine: Loading | None = None) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace = grace
        self.engine = engine
        self.load_failure: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._shutdown_requested = False

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.engine is not None and not self.should_exit:
            self._watch_task = self._loop.create_task(self._watch_load(self.engine))

    async def _watch_load(self, engine: Loading) -> None:
        try:
            await engine.wait_ready()
        except Exception as exc:
            self.load_failure = str(exc) or type(exc).__name__
            log.error("stopping: %s", self.load_failure)
            self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn's, this does not re-raise the signal after shutdown: a drained
        # server exits 0.
        if self._shutdown_requested or self._loop is None or not self.started:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self.request_shutdown()

    def request_shutdown(self) -> None:
        """Begin the graceful shutdown (idempotent; safe from signal handlers and threads)."""
        if self._shutdown_requested or self._loop is None:
            return
        self._shutdown_requested = True
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        if self.engine is not None:
            self.engine.drain()  # running requests carry on; the engine takes no new ones
        try:
            await self.lifecycle.drain(self.grace)
        finally:
            self.should_exit = True
