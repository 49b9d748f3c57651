"""The gate every HTTP request passes first, and the accounts it settles when one ends.

In order: a request id (``X-Request-ID``, echoed on the response), refusal while shutting down
(503), the API key (401), the key's requests per minute (429), the body size (413). When the
response is over, one place records the request: the log line, the metrics, the usage
ledger's row and the key's token count. A plain ASGI middleware, so streamed responses pass
through untouched and a client that goes away is seen at once.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from insieme.api.context import AppContext
from insieme.api.requestlog import QUIET_PATHS, log_request
from insieme.api.tracking import RequestRecord
from insieme.errors import (
    APIError,
    AuthenticationError,
    PayloadTooLarge,
    ServiceUnavailable,
)
from insieme.ledger import UsageEntry

log = logging.getLogger("insieme.api")

# Paths anyone may read without a key.
PUBLIC_PATHS = frozenset({"/health", "/", "/openapi.json", "/docs", "/metrics"})
PUBLIC_PREFIXES = ("/static/",)
# Requests that count against a key's requests per minute.
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                              "/v1/rerank"})
# Requests whose prompts go through the prefix cache.
CACHED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


class Gatekeeper:
    """Admission and accounting around the routes (see the module docstring)."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given_id = headers.get("x-request-id")
        record = RequestRecord(
            method=scope["method"], path=scope["path"],
            client_request_id=given_id if given_id and _REQUEST_ID.fullmatch(given_id) else None,
        )
        lifecycle = self.ctx.lifecycle
        # The route reads it as request.state.record.
        scope = {**scope, "state": {**scope.get("state", {}), "record": record}}
        lifecycle.active.add(record)
        try:
            error = self._admit(record, headers)
            if error is not None:
                await self._refuse(record, error, scope, receive, send)
            else:
                await self.app(scope, self._receive(record, receive),
                               self._send(record, send))
        finally:
            try:
                for stream in record.streams:
                    # The response is over: nothing the engine still runs for it has a reader.
                    await stream.aclose()
            finally:
                if record.lease is not None:  # its model may be unloaded from now on
                    await record.lease.release()
            lifecycle.active.discard(record)
            self._settle(record)

    def _admit(self, record: RequestRecord, headers: Headers) -> APIError | None:
        ctx = self.ctx
        path = record.path
        if ctx.lifecycle.draining and path != "/metrics":
            return ServiceUnavailable("the server is shutting down; retry on another instance",
                                      code="shutting_down")
        if ctx.keys.enabled and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            record.key = ctx.keys.authenticate(headers.get("authorization", ""))
            if record.key is None:
                return AuthenticationError(
                    "Invalid or missing API key: send 'Authorization: Bearer <key>'")
        try:
            if record.key is not None and path in GENERATION_PATHS:
                ctx.limiter.admit(record.key)
        except APIError as exc:
            return exc
        length = headers.get("content-length")
        limit = ctx.config.limits.max_request_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            return PayloadTooLarge(f"the request body is {length} bytes; the limit is {limit}")
        if ctx.config.log_prompts and path in GENERATION_PATHS:
            record.body = bytearray()
        return None

    async def _refuse(self, record: RequestRecord, error: APIError, scope: Scope,
                      receive: Receive, send: Send) -> None:
        response = JSONResponse(error.body(), status_code=error.status_code,
                                headers=error.headers)
        await response(scope, receive, self._send(record, send))

    def _receive(self, record: RequestRecord, receive: Receive) -> Receive:
        limit = self.ctx.config.limits.max_request_bytes
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:  # a body sent without Content-Length, or lying about it
                    raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
                if record.body is not None:
                    record.body += chunk
            return message

        return counted

    def _send(self, record: RequestRecord, send: Send) -> Send:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                record.response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", record.request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return watched

    def _settle(self, record: RequestRecord) -> None:
        """The request is over: log it, count it, put it in the ledger, charge its key."""
        ctx = self.ctx
        if not record.response_started:
            record.status = 499  # the client left before any answer (nginx's convention)
        model = record.model or ctx.models.default.name
        try:
            _count(ctx, record)
            if record.completion_id is not None:
                ctx.limiter.settle(record.reservation,
                                   record.prompt_tokens + record.completion_tokens)
                if ctx.ledger is not None:
                    ctx.ledger.record(_usage_entry(record, model))
            log_request(record, model, log_prompts=ctx.config.log_prompts)
        except Exception:  # accounting must never break serving
            log.exception("could not account for request %s", record.request_id)


def _count(ctx: AppContext, record: RequestRecord) -> None:
    metrics = ctx.metrics.model(record.model)
    error_status = record.error_status or (record.status if record.status >= 400 else None)
    # A client that left is no error of ours, nor is a probe while the model loads.
    if error_status is not None and record.status != 499 and record.path not in QUIET_PATHS:
        metrics.request_error(error_status)
    if record.completion_id is None:
        return
    metrics.prompt_tokens.inc(record.prompt_tokens)
    metrics.generation_tokens.inc(record.completion_tokens)
    if record.path in CACHED_PATHS:
        metrics.prefix_cache_queries.inc(record.prompt_tokens)
        metrics.prefix_cache_hits.inc(record.cached_tokens)
    if record.queue_seconds is not None:
        metrics.request_queue_time.observe(record.queue_seconds)
    if record.error_status is None and record.finish_reasons:
        metrics.request_success(record.finish_reasons[0])
        if record.finished_at is not None:
            metrics.e2e_request_latency.observe(record.finished_at - record.arrived)


def _usage_entry(record: RequestRecord, model: str) -> UsageEntry:
    return UsageEntry(
        request_id=record.request_id,
        completion_id=record.completion_id,
        key_name=record.key.name if record.key else None,
        model=model,
        route=record.path,
        started_at=record.started_at,
        finished_at=time.time(),
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cached_tokens=record.cached_tokens,
        status=record.status,
        finish_reason=record.finish_reason,
    )
