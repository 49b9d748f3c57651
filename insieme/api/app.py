"""The ASGI application: the /v1/v1 collapse, the gate (keys, limits, accounting), the routes,
and the error body everywhere."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from insieme.api.chat import create_chat_completion
from insieme.api.completions import create_completion
from insieme.api.context import AppContext
from insieme.api.embeddings import create_embeddings
from insieme.api.gate import Gatekeeper
from insieme.api.keys import KeyRing, RateLimiter
from insieme.api.lifecycle import Lifecycle
from insieme.api.metrics import Metrics, metrics_endpoint
from insieme.api.openapi import install_openapi
from insieme.api.registry import ModelRegistry
from insieme.api.rerank import create_rerank
from insieme.api.status import health, list_models
from insieme.config import ServerConfig
from insieme.engine.base import Engine
from insieme.errors import APIError, InternalError, NotFoundError
from insieme.ledger import UsageLedger

log = logging.getLogger("insieme.api")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class InsiemeApp:
    """The whole server as one ASGI app; ``ctx`` holds its models, metrics and lifecycle."""

    def __init__(self, app: FastAPI, ctx: AppContext) -> None:
        self.fastapi = app
        self.ctx = ctx
        self._gate = Gatekeeper(app, ctx)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # together 3.x appends /v1/... to a base URL that already ends in /v1: serve both.
            path: str = scope["path"]
            while path.startswith("/v1/v1/") or path == "/v1/v1":
                path = path[3:]
            if path != scope["path"]:
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self._gate(scope, receive, send)


class _RevalidatedStaticFiles(StaticFiles):
    """The playground's files change with every upgrade: always revalidate them."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = "no-cache"
        return response


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def _playground(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(models: Engine | ModelRegistry, config: ServerConfig) -> InsiemeApp:
    """Build the app around its models: a registry (``insieme serve``), or one engine that
    serves ``config.served_model_names``. The models are started and stopped with the app."""
    if not isinstance(models, ModelRegistry):
        models = ModelRegistry.single(models, config.served_model_names, config.engine)
    registry = models
    lifecycle = Lifecycle()
    limiter = RateLimiter()
    ctx = AppContext(
        models=registry,
        config=config,
        metrics=Metrics(registry),
        keys=KeyRing.from_config(config.api_key, config.api_keys_file),
        limiter=limiter,
        lifecycle=lifecycle,
        ledger=UsageLedger(config.usage_db) if config.usage_db else None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await registry.start()
        try:
            yield
        finally:
            await registry.stop()
            if ctx.ledger is not None:
                ctx.ledger.close()

    app = FastAPI(title="insieme", version="0.1.0", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.state.ctx = ctx

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> Response:
        return _error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client left while its body was still arriving: nobody to answer, nothing to log.
        return Response(status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error_response(NotFoundError(f"no route for {request.url.path}"))
        if exc.status_code == 405:
            error = NotFoundError(f"{request.method} is not allowed on {request.url.path}",
                                  code="method_not_allowed")
            error.status_code = 405
            return _error_response(error)
        return JSONResponse(
            {"error": {"message": str(exc.detail), "type": "invalid_request_error",
                       "param": None, "code": None}},
            status_code=exc.status_code,
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error_response(InternalError("internal server error"))

    app.add_api_route("/v1/chat/completions", create_chat_completion, methods=["POST"])
    app.add_api_route("/v1/completions", create_completion, methods=["POST"])
    app.add_api_route("/v1/embeddings", create_embeddings, methods=["POST"])
    app.add_api_route("/v1/rerank", create_rerank, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    install_openapi(app)
    # The playground: static files inside the package, no build step, no CDN.
    if (STATIC_DIR / "index.html").is_file():
        app.add_api_route("/", _playground, methods=["GET"], include_in_schema=False)
        app.mount("/static", _RevalidatedStaticFiles(directory=STATIC_DIR), name="static")
    return InsiemeApp(app, ctx)
