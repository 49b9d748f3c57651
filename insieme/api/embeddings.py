"""POST /v1/embeddings in Together's and OpenAI's shape: a vector per input, floats or
base64 (little-endian float32, as OpenAI sends them)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from insieme.api.context import AppContext
from insieme.api.engines import account, engine_for, hold_tokens
from insieme.api.schemas import _Body
from insieme.api.streaming import new_id, parse_body
from insieme.engine.types import Capability
from insieme.errors import InvalidRequestError

MAX_INPUTS = 512  # inputs in one request


class EmbeddingRequest(_Body):
    model: str
    # A string, a list of strings, a list of token ids, or a list of such lists (OpenAI);
    # checked by ``inputs`` to name what is wrong.
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    # vLLM's extension: keep only the last k tokens of a longer input (-1: as many as fit).
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = None


def inputs(value: Any) -> list[str | list[int]]:
    """The request's inputs as a list of texts and token-id lists."""
    if isinstance(value, str):
        value = [value]
    elif _token_ids(value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("'input' must be a non-empty string, a list of strings, "
                                  "or token ids", param="input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequestError(f"'input' has {len(value)} items; this server embeds at "
                                  f"most {MAX_INPUTS} in one request", param="input",
                                  code="too_many_inputs")
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise InvalidRequestError(f"input {i} is an empty string", param="input")
        elif not _token_ids(item):
            raise InvalidRequestError(f"input {i} is neither a string nor a non-empty list "
                                      "of token ids", param="input")
    return value


def _token_ids(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value))


async def create_embeddings(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await parse_body(request, EmbeddingRequest,
                            max_depth=ctx.config.limits.max_json_depth)
    items = inputs(body.input)
    record = request.state.record
    engine = await engine_for(ctx, record, body.model, Capability.EMBEDDINGS)
    vocab = engine.info.n_vocab
    if vocab and any(isinstance(x, list) and max(x) >= vocab for x in items):
        raise InvalidRequestError(f"a token id in 'input' is outside the vocabulary (0 to "
                                  f"{vocab - 1})", param="input")
    size = engine.info.embedding_size
    if body.dimensions is not None and body.dimensions != size:
        raise InvalidRequestError(
            f"The model '{body.model}' gives {size}-dimensional embeddings and cannot shorten "
            "them; leave out 'dimensions'", param="dimensions", code="dimensions_unsupported")
    hold_tokens(ctx, record, sum(len(x) + 2 for x in items))
    embedded = await engine.embed(items, truncate=body.truncate_prompt_tokens)
    request_id = new_id("embd")
    account(record, request_id, embedded.prompt_tokens)
    data = [{"object": "embedding", "index": i, "embedding": _encoded(vector,
                                                                      body.encoding_format)}
            for i, vector in enumerate(embedded.vectors)]
    tokens = embedded.prompt_tokens
    return JSONResponse({"object": "list", "id": request_id, "model": body.model,
                         "data": data,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
