"""Each request's record, and the stream wrapper that fills it in as outputs arrive.

The gate (``insieme.api.gate``) opens a ``RequestRecord`` for every HTTP request and hands it
to the route (``request.state.record``); ``insieme.api.admission`` fills in what the engine
was asked for and wraps the engine's stream in a ``TrackedStream``, which times the tokens
(TTFT, inter-token latency), counts them, and ends the request early with an error when its
time is up (``--request-timeout``) or the server is shutting down.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from insieme.api.keys import ApiKey, Reservation
from insieme.api.metrics import ModelMetrics
from insieme.api.streaming import EndedByServer
from insieme.engine.base import OutputStream
from insieme.engine.types import FinishReason, StepOutput
from insieme.errors import APIError, RequestTimeout

if TYPE_CHECKING:
    from insieme.api.registry import Lease


@dataclass(eq=False)
class RequestRecord:
    """One HTTP request as the server saw it: who sent it, what it cost, how long it took."""

    method: str
    path: str
    client_request_id: str | None = None  # the X-Request-ID header, when valid
    arrived: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    key: ApiKey | None = None
    status: int = 0
    response_started: bool = False
    completion_id: str | None = None  # set once the engine has the request
    n: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    finished_at: float | None = None  # the last choice's last token
    queue_seconds: float | None = None
    error_status: int | None = None  # an error ended it inside the stream
    error_message: str | None = None
    reservation: Reservation | None = None  # its tokens held in its key's window
    body: bytearray | None = None  # kept only with --log-prompts
    streams: list[TrackedStream] = field(default_factory=list)  # what it asked the engine for
    model: str | None = None  # the registered model it named (its first served name)
    lease: Lease | None = None  # that model held in use until the response ends
    own_id: str = field(default_factory=lambda: f"req-{secrets.token_hex(12)}")

    @property
    def request_id(self) -> str:
        """The client's X-Request-ID, else the completion's id, else one of our own."""
        return self.client_request_id or self.completion_id or self.own_id

    @property
    def finish_reason(self) -> str | None:
        return ",".join(self.finish_reasons) if self.finish_reasons else None


class StreamRegistry:
    """The streams in flight, so shutdown can end the ones its grace period did not see out."""

    def __init__(self) -> None:
        self.streams: set[TrackedStream] = set()
        self.expired_by: APIError | None = None

    def expire_all(self, error: APIError) -> None:
        self.expired_by = error
        for stream in list(self.streams):
            stream.expire(error)


class TrackedStream:
    """An engine stream that times its tokens into the record and can be ended from outside.

    Ending it (``expire``) aborts the request in the engine. A client that is already
    reading a stream then gets an error event; one still waiting for a JSON body gets the
    error's status.
    """

    def __init__(self, inner: OutputStream, record: RequestRecord, metrics: ModelMetrics,
                 registry: StreamRegistry, deadline: float | None,
                 timeout: float | None) -> None:
        self._inner = inner
        self._record = record
        self._metrics = metrics
        self._registry = registry
        self._timeout = timeout
        loop = asyncio.get_running_loop()
        # Deadlines in the loop's clock, which asyncio.timeout_at understands.
        self._deadline = None if deadline is None else loop.time() + deadline - time.monotonic()
        self._scope: asyncio.Timeout | None = None
        self._expired_by: APIError | None = None
        self._last_token: dict[int, float] = {}
        self._tokens_seen = [0] * record.n
        self._open = set(range(record.n))
        self._settled = False
        registry.streams.add(self)
        if registry.expired_by is not None:
            self.expire(registry.expired_by)

    def __aiter__(self) -> AsyncIterator[StepOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StepOutput]:
        outputs = aiter(self._inner)
        loop = asyncio.get_running_loop()
        try:
            while self._open:
                if self._deadline is not None and loop.time() >= self._deadline:
                    # Past it with outputs still queued (a slow reader): stop here too.
                    await self._inner.aclose()
                    yield self._expired()
                    return
                try:
                    async with asyncio.timeout_at(self._deadline) as scope:
                        self._scope = scope
                        output = await anext(outputs)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    yield self._expired()
                    return
                finally:
                    self._scope = None
                self._observe(output)
                yield output
        finally:
            self._settle()

    def expire(self, error: APIError) -> None:
        """End the request now (shutdown past its grace); safe to call more than once."""
        if self._expired_by is None:
            self._expired_by = error
        loop = asyncio.get_running_loop()
        self._deadline = loop.time()
        if self._scope is not None:
            self._scope.reschedule(self._deadline)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._settle()

    def _expired(self) -> StepOutput:
        error = self._expired_by or RequestTimeout(
            f"the request ran longer than this server's limit of {self._timeout:g} s")
        record = self._record
        record.error_status, record.error_message = error.status_code, error.message
        if not record.response_started:
            raise error  # a JSON response: the error's own status and body
        return EndedByServer(index=0, token=None, text="", finish_reason=FinishReason.ERROR,
                             error=error.message, reason=error)

    def _observe(self, output: StepOutput) -> None:
        record = self._record
        index = output.index
        if output.token is not None:
            now = time.monotonic()
            if record.first_token_at is None:
                record.first_token_at = now
                self._metrics.time_to_first_token.observe(now - record.arrived)
            last = self._last_token.get(index)
            if last is not None:
                self._metrics.inter_token_latency.observe(now - last)
            self._last_token[index] = now
            self._tokens_seen[index] += 1
        if output.finish_reason is None:
            return
        self._open.discard(index)
        record.completion_tokens += output.completion_tokens
        record.cached_tokens = max(record.cached_tokens, output.cached_tokens)
        record.finish_reasons.append(output.finish_reason.value)
        if output.queue_seconds is not None and record.queue_seconds is None:
            record.queue_seconds = output.queue_seconds
        if output.finish_reason is FinishReason.ERROR and record.error_status is None:
            record.error_status, record.error_message = 500, output.error
        if not self._open:
            record.finished_at = time.monotonic()

    def _settle(self) -> None:
        """Account for choices that never finished (client gone, timeout, shutdown)."""
        if self._settled:
            return
        self._settled = True
        self._registry.streams.discard(self)
        record = self._record
        for index in sorted(self._open):
            record.completion_tokens += self._tokens_seen[index]
            record.finish_reasons.append("error" if record.error_status else "abort")
        self._open.clear()
