"""How a route gets the engine of the model a request names.

::

    entry = routing.find_model(ctx, record, body.model, "chat")   # 404 / 400 at once
    engine = await routing.use_model(ctx, record, entry)          # loads it if need be

``use_model`` holds the model in use until the response has ended, streamed or not (the gate
releases the lease), so the registry never unloads it under the request. A streamed request
for a model that is not loaded yet gets its response started at once and ``: ping`` comments
while it waits (``pinged``), so clients and proxies see a live connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse

from insieme.api.admission import Admitted
from insieme.api.context import AppContext
from insieme.api.registry import ModelEntry, ModelState
from insieme.api.streaming import SSE_HEADERS, error_event
from insieme.api.tracking import RequestRecord
from insieme.catalog import TASK_TYPES
from insieme.engine.base import Engine
from insieme.errors import APIError, InvalidRequestError

PING = b": ping\n\n"
PING_SECONDS = 2.0
_WHAT = {"chat": "chat and completions", "embed": "embeddings", "rerank": "rerank"}


def find_model(ctx: AppContext, record: RequestRecord, name: str, task: str) -> ModelEntry:
    """The registered model ``name`` (404 naming the served models if none), if it serves
    ``task`` (400 if not)."""
    assert task in TASK_TYPES
    entry = ctx.models.find(name)
    record.model = entry.name
    # A chat model also embeds (pooled) and reranks (a yes/no judgement), where its engine
    # can; a model registered to embed or to rerank does only that.
    if entry.spec.task != task and entry.spec.task != "chat":
        raise InvalidRequestError(
            f"the model '{name}' serves {_WHAT[entry.spec.task]}, not {_WHAT[task]}",
            param="model", code="model_not_supported")
    return entry


async def use_model(ctx: AppContext, record: RequestRecord, entry: ModelEntry) -> Engine:
    """``entry``'s engine, loaded, held in use until the request's response has ended."""
    if record.lease is not None:  # one model per request
        assert record.lease.entry is entry
        return record.lease.engine
    record.lease = await ctx.models.acquire(entry)
    return record.lease.engine


def must_wait(entry: ModelEntry) -> bool:
    """Whether a request for ``entry`` would wait for it to load."""
    return entry.state is not ModelState.LOADED


async def pinged(ctx: AppContext, record: RequestRecord, entry: ModelEntry,
                 events: Callable[[Engine], AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """An SSE body that pings while ``entry`` loads, then is ``events(engine)``; an error
    (the load failed, the wait ran out, the request was refused) becomes an error event."""
    yield PING
    waiting = asyncio.ensure_future(use_model(ctx, record, entry))
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=PING_SECONDS)
            if not waiting.done():
                yield PING
        engine = waiting.result()
        async for chunk in events(engine):
            yield chunk
    except APIError as error:
        record.error_status, record.error_message = error.status_code, error.message
        yield error_event(error)
    finally:
        if not waiting.done():  # the client left while it waited
            waiting.cancel()
            # Let it finish: a lease it got after all is on the record, which the gate
            # releases once the response is over.
            await asyncio.wait({waiting})


async def generate(ctx: AppContext, record: RequestRecord, entry: ModelEntry, stream: bool,
                   admit: Callable[[Engine], Awaitable[Admitted]],
                   chunks: Callable[[Admitted], AsyncIterator[bytes]],
                   ) -> Admitted | StreamingResponse:
    """A generation request on ``entry``'s engine: ``admit`` it, and for a stream, the SSE
    response of its ``chunks``. A stream whose model must load first starts at once, with
    pings; otherwise every refusal comes before the response, with its own status."""
    if stream and must_wait(entry):
        async def events(engine: Engine) -> AsyncIterator[bytes]:
            async for event in chunks(await admit(engine)):
                yield event

        return _sse(pinged(ctx, record, entry, events))
    admitted = await admit(await use_model(ctx, record, entry))
    return _sse(chunks(admitted)) if stream else admitted


def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
