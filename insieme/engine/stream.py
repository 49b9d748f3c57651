"""The asyncio side of a request: a queue the engine thread fills, read by the API layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from insieme.engine.types import StepOutput


class RequestStream:
    """Outputs of one request, in order; ends when all ``n`` choices have finished.

    The engine calls ``put`` on the event loop thread (through ``call_soon_threadsafe``).
    Leaving the iteration early (client gone, task cancelled) calls ``on_abort`` once.
    """

    def __init__(self, request_id: str, n: int, on_abort: Callable[[str], None]) -> None:
        self.request_id = request_id
        self._queue: asyncio.Queue[StepOutput] = asyncio.Queue()
        self._open_choices = n  # counted as the reader sees them
        self._undelivered = set(range(n))  # choices whose last output is still to come
        self._on_abort = on_abort
        self._done = False

    def put(self, output: StepOutput) -> None:
        self._queue.put_nowait(output)
        if output.finish_reason is not None:
            self._undelivered.discard(output.index)

    @property
    def delivered(self) -> bool:
        """Whether every choice's last output has been put."""
        return not self._undelivered

    def open_choices(self) -> list[int]:
        """The choices whose last output has not been put yet."""
        return sorted(self._undelivered)

    def __aiter__(self) -> AsyncIterator[StepOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StepOutput]:
        try:
            while self._open_choices > 0:
                output = await self._queue.get()
                if output.finish_reason is not None:
                    self._open_choices -= 1
                yield output
            self._done = True
        finally:
            if not self._done:
                self._done = True
                self._on_abort(self.request_id)

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._on_abort(self.request_id)
