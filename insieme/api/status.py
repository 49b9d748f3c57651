"""GET /v1/models and GET /health (503 while the model loads; the gate answers 503 while
the server shuts down)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from insieme.api.context import AppContext
from insieme.engine.types import EngineState
from insieme.errors import ServiceUnavailable


def _model_card(ctx: AppContext, name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": ctx.started_at,
        "owned_by": "insieme",
        "type": "chat",
        "display_name": name.rsplit("/", 1)[-1],
        "organization": name.split("/", 1)[0] if "/" in name else "insieme",
        "context_length": ctx.engine.info.max_model_len,
        # together 1.x requires a pricing object; self-hosted tokens cost nothing.
        "pricing": {"input": 0, "output": 0, "hourly": 0, "base": 0, "finetune": 0},
    }


async def list_models(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    cards = [_model_card(ctx, name) for name in ctx.config.served_model_names]
    # together 1.x/2.x and together-ai expect a bare list; openai wants the wrapped object.
    if request.headers.get("user-agent", "").lower().startswith("together"):
        return JSONResponse(cards)
    return JSONResponse({"object": "list", "data": cards})


async def health(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    engine = ctx.engine
    if engine.state is EngineState.FAILED:
        raise ServiceUnavailable(engine.failure or "the engine failed", code="engine_failed")
    if engine.state is not EngineState.READY:
        raise ServiceUnavailable(f"the engine is {engine.state.value}"
                                 if engine.state is not EngineState.LOADING
                                 else "the model is loading")
    stats = await engine.stats()
    body: dict[str, Any] = {
        "status": "ok", "model": ctx.config.model_id, "running": stats.running,
        "waiting": stats.waiting, "kv_sequences": stats.kv_sequences,
        "open_requests": stats.open_requests}
    if stats.replicas:  # an engine spread over replicas: each one's state
        body["replicas"] = [
            {"replica": r.replica, "node": r.node, "pid": r.pid, "state": r.state,
             "running": r.running, "waiting": r.waiting, "served": r.served}
            for r in stats.replicas]
    return JSONResponse(body)
