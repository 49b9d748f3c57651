"""POST /v1/rerank in Together's shape (Cohere's too): each document's relevance to a query,
most relevant first.

Documents are strings or JSON objects; an object is ranked on the JSON of its
``rank_fields`` (all its keys when none are named) and, with ``return_documents``, comes
back as ``{"text": <the object as JSON>}``, as Together returns it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from insieme.api.context import AppContext
from insieme.api.embeddings import MAX_INPUTS
from insieme.api.engines import account, engine_for, hold_tokens
from insieme.api.schemas import _Body
from insieme.api.streaming import new_id, parse_body
from insieme.engine.types import Capability
from insieme.errors import InvalidRequestError


class RerankRequest(_Body):
    model: str
    query: Annotated[str, Field(min_length=1)]
    documents: Annotated[list[str | dict[str, Any]], Field(min_length=1)]
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool = False
    rank_fields: Annotated[list[str], Field(min_length=1)] | None = None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def ranked_texts(body: RerankRequest) -> list[str]:
    """The text each document is ranked on."""
    if len(body.documents) > MAX_INPUTS:
        raise InvalidRequestError(f"'documents' has {len(body.documents)} items; this server "
                                  f"ranks at most {MAX_INPUTS} in one request",
                                  param="documents", code="too_many_documents")
    texts = []
    for i, document in enumerate(body.documents):
        if isinstance(document, str):
            texts.append(document)
            continue
        fields = body.rank_fields or list(document)
        missing = [f for f in fields if f not in document]
        if missing or not fields:
            raise InvalidRequestError(
                f"document {i} has no field {missing[0]!r} named in rank_fields" if missing
                else f"document {i} is an empty object", param=f"documents.{i}")
        texts.append(_json({f: document[f] for f in fields}))
    return texts


async def create_rerank(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await parse_body(request, RerankRequest, max_depth=ctx.config.limits.max_json_depth)
    texts = ranked_texts(body)
    record = request.state.record
    engine = await engine_for(ctx, record, body.model, Capability.RERANK)
    hold_tokens(ctx, record, len(texts) * (len(body.query) + 16) + sum(map(len, texts)))
    scored = await engine.rerank(body.query, texts)
    request_id = new_id("rerank")
    account(record, request_id, scored.prompt_tokens)
    order = sorted(range(len(texts)), key=lambda i: -scored.scores[i])  # stable: ties by index
    results = []
    for i in order[: body.top_n]:
        result: dict[str, Any] = {"index": i, "relevance_score": scored.scores[i]}
        if body.return_documents:
            document = body.documents[i]
            result["document"] = {"text": document if isinstance(document, str)
                                  else _json(document)}
        results.append(result)
    tokens = scored.prompt_tokens
    return JSONResponse({"object": "rerank", "id": request_id, "model": body.model,
                         "results": results,
                         "usage": {"prompt_tokens": tokens, "completion_tokens": 0,
                                   "total_tokens": tokens}})
