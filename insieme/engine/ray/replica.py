"""One engine replica: a Ray Serve deployment that owns one engine, built by
``create_engine`` like any other, and streams its outputs to the ingress.

The class is plain here; ``insieme.engine.ray.deploy`` makes it a deployment with the
resources and routing the ``RayConfig`` asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve

from insieme.config import EngineConfig
from insieme.engine.base import Engine, OutputStream
from insieme.engine.factory import create_engine
from insieme.engine.ray.board import REPORT_SECONDS, get_board
from insieme.engine.ray.messages import Accepted, Refused, RoutedRequest
from insieme.engine.types import (
    ChatPrompt,
    Embedded,
    EngineStats,
    ModelInfo,
    ReplicaStats,
    Scored,
    StepOutput,
)
from insieme.errors import APIError

log = logging.getLogger("insieme.engine.ray")


class EngineReplica:
    """A Serve replica around one engine. Serve waits for ``__init__`` (the model load)
    before it routes requests here, and restarts the replica if its process dies."""

    async def __init__(self, engine_config: EngineConfig, app_name: str) -> None:
        self._engine: Engine = create_engine(engine_config)
        context = serve.get_replica_context()
        self._name = context.replica_id.unique_id
        self._node = ray.util.get_node_ip_address()
        self._board = get_board(app_name)
        self._served = 0
        await self._engine.start()
        await self._engine.wait_ready()
        self._poster = asyncio.create_task(self._post_forever())

    async def info(self) -> ModelInfo:
        return self._engine.info

    async def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return await self._engine.tokenize(text, add_special=add_special)

    async def render_chat(self, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None = None) -> ChatPrompt:
        return await self._engine.render_chat(messages, tools=tools)

    async def embed(self, inputs: list[str | list[int]],
                    truncate: int | None = None) -> Embedded:
        return await self._engine.embed(inputs, truncate=truncate)

    async def rerank(self, query: str, documents: list[str]) -> Scored:
        return await self._engine.rerank(query, documents)

    async def stats(self) -> EngineStats:
        return await self._engine.stats()

    async def generate(self, routed: RoutedRequest) -> AsyncIterator[object]:
        """``Accepted`` (or ``Refused``, and nothing more), then lists of outputs: each list
        whatever the engine produced since the ingress took the last one, so a slow reader
        costs one message per read rather than one per token. Serve cancels this generator
        when the ingress cancels the call (the client left): the engine then aborts."""
        try:
            stream = await self._engine.submit(routed.request)
        except APIError as error:
            yield Refused(error)
            return
        self._served += 1
        yield Accepted(self._name)
        pending: asyncio.Queue[StepOutput | None] = asyncio.Queue()
        pump = asyncio.create_task(_pump(stream, pending))
        try:
            finished = False
            while not finished:
                batch = [await pending.get()]
                while not pending.empty():
                    batch.append(pending.get_nowait())
                finished = batch[-1] is None
                yield [output for output in batch if output is not None]
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await stream.aclose()

    async def _post_forever(self) -> None:
        while True:
            try:
                stats = await self._engine.stats()
                await self._board.post.remote(ReplicaStats(
                    replica=self._name, node=self._node, pid=os.getpid(),
                    state=self._engine.state.value, running=stats.running,
                    waiting=stats.waiting, kv_cells_used=stats.kv_cells_used,
                    kv_cells_total=stats.kv_cells_total, served=self._served))
            except Exception:  # the board restarting: post again next time
                log.warning("could not post this replica's stats", exc_info=True)
            await asyncio.sleep(REPORT_SECONDS)

    async def check_health(self) -> None:
        """Serve's health check: a failed engine makes Serve replace this replica."""
        if self._engine.failure is not None:
            raise RuntimeError(self._engine.failure)

    async def __del__(self) -> None:
        self._poster.cancel()
        with contextlib.suppress(Exception):
            await self._board.leave.remote(self._name)
        await self._engine.stop()


async def _pump(stream: OutputStream, pending: asyncio.Queue[StepOutput | None]) -> None:
    async for output in stream:
        pending.put_nowait(output)
    pending.put_nowait(None)
