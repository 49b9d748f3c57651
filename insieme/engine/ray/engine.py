"""``RayEngine``: the ``Engine`` the API layer talks to, in front of Serve's engine replicas.

Every call goes through a Serve deployment handle: Serve picks the replica (by prompt prefix,
see ``routing``), bounds the queue in front of full replicas (``BackPressureError``, a 429
here) and streams a request's outputs back as the replica produces them. A replica that dies
costs no request that no client has seen anything of: it runs again on another replica (a
non-streamed request is read whole before its outputs are handed on, so it counts as unseen
until it finishes); a stream that was already showing ends with an error output at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ray.exceptions import (
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    RayTaskError,
    WorkerCrashedError,
)
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from insieme.engine.ray.board import get_board
from insieme.engine.ray.messages import Refused, RoutedRequest
from insieme.engine.states import EngineLife
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
from insieme.errors import (
    APIError,
    ConfigError,
    InvalidRequestError,
    QueueFullError,
    ServiceUnavailable,
)

log = logging.getLogger("insieme.engine.ray")

# The replica went away under the call: the request may run again elsewhere if unseen.
LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError,
        ReplicaUnavailableError, DeploymentUnavailableError)
# Waits between the tries of one request whose replica died: Serve stops routing to a dead
# replica at once, so the next try finds another. Three tries in all, never more: a request
# that kills every replica it lands on (a crash in the engine) must not take them all down.
RETRY_SECONDS = (0.5, 1.5)


class ReplicaSource(Protocol):
    """Where the replicas come from: started by this process (``insieme serve --ray-address``)
    or bound to this ingress by a Serve application (``serve deploy``). Both block."""

    app_name: str

    def open(self) -> DeploymentHandle: ...

    def close(self) -> None: ...


class RayEngine(EngineLife):
    """The replicas of one engine as one ``Engine``."""

    def __init__(self, source: ReplicaSource) -> None:
        self._source = source
        self.info = ModelInfo(name=source.app_name, max_model_len=0, n_vocab=0, max_num_seqs=1)
        self.state = EngineState.LOADING
        self.failure: str | None = None
        self._handle: DeploymentHandle | None = None
        self._board: Any = None
        self._load_task: asyncio.Task[None] | None = None
        self._open_requests = 0

    # -- life cycle -----------------------------------------------------------------------

    async def _load(self) -> None:
        try:
            handle = await asyncio.to_thread(self._source.open)
            self.info = await handle.info.remote()
            self._board = get_board(self._source.app_name)
        except Exception as exc:
            self.state = EngineState.FAILED
            self.failure = f"the Ray replicas did not start: {exc}"
            log.error("%s", self.failure)
            raise ConfigError(self.failure) from exc
        self._handle = handle
        if self.state is EngineState.LOADING:
            self.state = EngineState.READY

    async def stop(self) -> None:
        self._mark_stopped()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self._handle = None
        await asyncio.to_thread(self._source.close)

    # -- requests -------------------------------------------------------------------------

    def _require(self) -> DeploymentHandle:
        self._refuse_unless_ready(self._handle is not None)
        assert self._handle is not None
        return self._handle

    async def _call(self, method: str, *args: Any) -> Any:
        """A call any replica may answer, tried again on another if its replica dies."""
        for wait in (*RETRY_SECONDS, None):
            try:
                return await getattr(self._require(), method).remote(*args)
            except LOST as exc:
                if wait is None:
                    raise ServiceUnavailable("no engine replica answered; retry shortly") from exc
                await asyncio.sleep(wait)
            except BackPressureError as exc:
                raise _busy() from exc
            except RayTaskError as exc:
                if isinstance(exc.cause, APIError):
                    raise exc.cause from None
                raise

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return await self._call("tokenize", text, add_special)  # type: ignore[no-any-return]

    async def render_chat(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> ChatPrompt:
        return await self._call("render_chat", messages, tools)  # type: ignore[no-any-return]

    async def embed(self, inputs: list[str | list[int]], *,
                    truncate: int | None = None) -> Embedded:
        return await self._call("embed", inputs, truncate)  # type: ignore[no-any-return]

    async def rerank(self, query: str, documents: list[str]) -> Scored:
        return await self._call("rerank", query, documents)  # type: ignore[no-any-return]

    async def submit(self, request: GenerationRequest) -> RayStream:
        self._require()
        if request.n > self.info.max_num_seqs:
            raise InvalidRequestError(
                f"n is {request.n}, but this server decodes at most {self.info.max_num_seqs} "
                "sequences at once (--max-num-seqs)", param="n", code="n_too_large")
        return RayStream(self, request, await self.open_generation(request))

    async def open_generation(self, request: GenerationRequest,
                              waits: tuple[float, ...] = RETRY_SECONDS,
                              ) -> DeploymentResponseGenerator:
        """Send ``request`` to a replica and wait until its engine has taken it, trying again
        after each of ``waits`` if the replica dies first; raises the typed error of a
        refusal, ``QueueFullError`` when every replica is full."""
        for wait in (*waits, None):
            response = self._require().options(stream=True).generate.remote(
                RoutedRequest(request))
            try:
                first = await anext(response)
            except BackPressureError as exc:
                raise _busy() from exc
            except LOST as exc:
                response.cancel()
                if wait is None:
                    raise ServiceUnavailable("no engine replica answered; retry shortly") from exc
                log.warning("a replica died before request %s started; trying another",
                            request.request_id)
                await asyncio.sleep(wait)
                continue
            except BaseException:
                response.cancel()
                raise
            if isinstance(first, Refused):
                raise first.error
            return response
        raise AssertionError("unreachable")

    async def stats(self) -> EngineStats:
        if self._board is None:
            return EngineStats(running=0, waiting=0, open_requests=self._open_requests)
        replicas = sorted(await self._board.read.remote(), key=lambda r: (r.node, r.replica))
        # The replicas post their counts each second; this ingress knows its own requests at
        # once: running and waiting are its open requests, split as the replicas last said.
        running = min(self._open_requests, sum(r.running for r in replicas))
        return EngineStats(
            running=running,
            waiting=self._open_requests - running,
            kv_cells_used=sum(r.kv_cells_used for r in replicas),
            kv_cells_total=sum(r.kv_cells_total for r in replicas),
            open_requests=self._open_requests,
            replicas=tuple(replicas),
        )


class RayStream:
    """One request's outputs from its replica; closing it early cancels the call, which
    aborts the request on the replica."""

    def __init__(self, engine: RayEngine, request: GenerationRequest,
                 response: DeploymentResponseGenerator) -> None:
        self._engine = engine
        self._request = request
        self._response = response
        self._done = False
        engine._open_requests += 1

    def __aiter__(self) -> AsyncIterator[StepOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StepOutput]:
        unfinished = set(range(self._request.n))
        shown = False  # whether the reader has had any output of this request
        reruns = list(RETRY_SECONDS)  # what is left of the request's tries
        try:
            while unfinished:
                try:
                    if self._request.streamed:
                        async for batch in self._response:
                            for output in batch:
                                shown = True
                                self._finished(output, unfinished)
                                yield output
                            if not unfinished:
                                break
                        break
                    outputs = [output async for batch in self._response for output in batch]
                except LOST as exc:
                    if shown or not reruns:
                        for output in _failed(unfinished, f"the engine replica serving this "
                                                          f"request died: {type(exc).__name__}"):
                            yield output
                        return
                    log.warning("a replica died under request %s; running it again",
                                self._request.request_id)
                    await asyncio.sleep(reruns.pop(0))
                    try:
                        self._response = await self._engine.open_generation(
                            self._request, waits=())
                    except APIError as error:
                        for output in _failed(unfinished, error.message):
                            yield output
                        return
                    continue
                shown = True
                for output in outputs:
                    self._finished(output, unfinished)
                    yield output
            if unfinished:  # the replica ended the call early: never leave the reader waiting
                for output in _failed(unfinished, "the engine replica ended this request early"):
                    yield output
        finally:
            self._finish()

    def _finished(self, output: StepOutput, unfinished: set[int]) -> None:
        """Count ``output`` off; with the request's last one, the request no longer counts
        as open (before the reader sees it, as with the engine's own streams)."""
        if output.finish_reason is not None:
            unfinished.discard(output.index)
            if not unfinished:
                self._finish(cancel=False)  # the replica ends the call itself

    def _finish(self, cancel: bool = True) -> None:
        if not self._done:
            self._done = True
            self._engine._open_requests -= 1
            if cancel:
                self._response.cancel()

    async def aclose(self) -> None:
        self._finish()


def _busy() -> QueueFullError:
    return QueueFullError("the server is busy: every replica is full, and the queue in front "
                          "of them too; retry shortly", retry_after=1)


def _failed(choices: set[int], reason: str) -> list[StepOutput]:
    return [StepOutput(index=index, token=None, text="", finish_reason=FinishReason.ERROR,
                       error=reason) for index in sorted(choices)]
