"""The ASGI application: routes, auth, the /v1/v1 collapse and the error body everywhere."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from insieme.api import schemas
from insieme.api.chat import create_chat_completion
from insieme.api.completions import create_completion
from insieme.api.context import AppContext
from insieme.api.models import health, list_models
from insieme.config import ServerConfig
from insieme.engine.base import Engine
from insieme.errors import APIError, AuthenticationError, InternalError, NotFoundError

log = logging.getLogger("insieme.api")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Paths anyone may read without a key.
PUBLIC_PATHS = frozenset({"/health", "/", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = ("/static/",)


class CollapseV1:
    """together 3.x appends /v1/... to a base URL that already ends in /v1: serve both."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            while path.startswith("/v1/v1/") or path == "/v1/v1":
                path = path[3:]
            if path != scope["path"]:
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def _body_schema(model: type[schemas.BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def _playground(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(engine: Engine, config: ServerConfig) -> ASGIApp:
    """Build the app around an engine; the engine is started and stopped with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="insieme", version="0.1.0", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.state.ctx = AppContext(engine=engine, config=config)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if config.api_key and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            header = request.headers.get("authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                key.strip().encode(), config.api_key.encode()
            ):
                return _error_response(AuthenticationError(
                    "Invalid or missing API key: send 'Authorization: Bearer <key>'"))
        response = await call_next(request)
        if path.startswith("/static/"):
            # The playground's files change with every upgrade: always revalidate them.
            response.headers["Cache-Control"] = "no-cache"
        return response

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> Response:
        return _error_response(exc)

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

    app.add_api_route("/v1/chat/completions", create_chat_completion, methods=["POST"],
                      openapi_extra=_body_schema(schemas.ChatCompletionRequest))
    app.add_api_route("/v1/completions", create_completion, methods=["POST"],
                      openapi_extra=_body_schema(schemas.CompletionRequest))
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/health", health, methods=["GET"])
    # The playground: static files inside the package, no build step, no CDN.
    if (STATIC_DIR / "index.html").is_file():
        app.add_api_route("/", _playground, methods=["GET"], include_in_schema=False)
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return CollapseV1(app)
