"""Which engine answers an embeddings or rerank request: the registry's model, loaded and held
until the response has ended, if its engine can do what is asked."""

from __future__ import annotations

import time

from insieme.api.context import AppContext
from insieme.api.routing import find_model, use_model
from insieme.api.tracking import RequestRecord
from insieme.engine.base import Engine
from insieme.engine.types import Capability
from insieme.errors import InvalidRequestError

_DOES = {Capability.EMBEDDINGS: "embeddings (/v1/embeddings)",
         Capability.RERANK: "reranking (/v1/rerank)"}


_TASK = {Capability.EMBEDDINGS: "embed", Capability.RERANK: "rerank"}


async def engine_for(ctx: AppContext, record: RequestRecord, model: str,
                     capability: Capability) -> Engine:
    """The engine serving ``model``, which must offer ``capability``: 404 for a model this
    server does not serve, 400 naming the model when it cannot do what is asked. It loads
    the model if need be and holds it until the response has ended."""
    engine = await use_model(ctx, record, find_model(ctx, record, model, _TASK[capability]))
    if capability not in engine.info.capabilities:
        raise InvalidRequestError(
            f"The model '{model}' does not support {_DOES.get(capability, capability.value)}",
            param="model", code="model_not_supported")
    return engine


def hold_tokens(ctx: AppContext, record: RequestRecord, most: int) -> None:
    """Hold up to ``most`` tokens in the key's tokens per minute before the work (the gate
    charges what was used when the request ends)."""
    if record.key is not None and record.key.tokens_per_minute is not None:
        record.reservation = ctx.limiter.reserve(record.key,
                                                 min(most, record.key.tokens_per_minute), 0)


def account(record: RequestRecord, request_id: str, prompt_tokens: int) -> None:
    """What the gate puts in the ledger and the metrics for a request that generated nothing."""
    record.completion_id = request_id
    record.prompt_tokens = prompt_tokens
    record.finish_reasons.append("stop")
    record.finished_at = time.monotonic()
