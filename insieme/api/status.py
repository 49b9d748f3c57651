"""GET /v1/models (every registered model, loaded or not) and GET /health (503 while nothing
can serve yet; the gate answers 503 while the server shuts down)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from insieme.api.context import AppContext
from insieme.api.registry import ModelEntry, ModelState
from insieme.engine.types import EngineState, EngineStats
from insieme.errors import ServiceUnavailable


def _model_card(ctx: AppContext, entry: ModelEntry, name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": ctx.started_at,
        "owned_by": "insieme",
        "type": entry.spec.model_type,
        "display_name": name.rsplit("/", 1)[-1],
        "organization": name.split("/", 1)[0] if "/" in name else "insieme",
        "context_length": entry.context_length,
        # together 1.x requires a pricing object; self-hosted tokens cost nothing.
        "pricing": {"input": 0, "output": 0, "hourly": 0, "base": 0, "finetune": 0},
        "loaded": entry.state is ModelState.LOADED,
    }


async def list_models(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    cards = [_model_card(ctx, entry, name) for entry in ctx.models.entries
             for name in entry.spec.names]
    # together 1.x/2.x and together-ai expect a bare list; openai wants the wrapped object.
    if request.headers.get("user-agent", "").lower().startswith("together"):
        return JSONResponse(cards)
    return JSONResponse({"object": "list", "data": cards})


async def health(request: Request) -> Response:
    """200 while a model serves or can be loaded on demand; 503 while the models loaded at
    start are still loading, or when every loaded engine has failed. Each model's state
    is listed."""
    ctx: AppContext = request.app.state.ctx
    entries = ctx.models.entries
    engines = [e.engine for e in entries if e.engine is not None and e.occupies]
    if not any(engine.state is EngineState.READY for engine in engines):
        for engine in engines:
            if engine.state is EngineState.FAILED:
                raise ServiceUnavailable(engine.failure or "the engine failed",
                                         code="engine_failed")
        for engine in engines:
            raise ServiceUnavailable("the model is loading" if engine.state is
                                     EngineState.LOADING else f"the engine is "
                                     f"{engine.state.value}")
    by_model = {e.name: await e.engine.stats() for e in entries
                if e.engine is not None and e.state is ModelState.LOADED}
    stats = list(by_model.values())
    total = EngineStats(running=sum(s.running for s in stats),
                        waiting=sum(s.waiting for s in stats),
                        kv_sequences=sum(s.kv_sequences for s in stats),
                        open_requests=sum(s.open_requests for s in stats))
    return JSONResponse(
        {"status": "ok", "model": ctx.models.default.name, "running": total.running,
         "waiting": total.waiting, "kv_sequences": total.kv_sequences,
         "open_requests": total.open_requests,
         "models": [_model_state(entry) for entry in entries],
         # engines spread over replicas (the Ray backend): each replica's state and gauges
         "replicas": [{"model": model, "replica": r.replica, "node": r.node, "pid": r.pid,
                       "state": r.state, "running": r.running, "waiting": r.waiting,
                       "served": r.served}
                      for model, s in by_model.items() for r in s.replicas]}
    )


def _model_state(entry: ModelEntry) -> dict[str, Any]:
    state: dict[str, Any] = {"id": entry.name, "state": entry.state.value,
                             "in_flight": entry.in_flight, "pinned": entry.spec.pinned}
    if entry.engine is not None and entry.engine.state is EngineState.FAILED:
        state["state"], state["error"] = "failed", entry.engine.failure
    elif entry.state is ModelState.FAILED:
        state["error"] = entry.failure
    return state
