"""POST /v1/completions: the legacy text-completion route, streamed and not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from insieme.api import prompting
from insieme.api.context import AppContext
from insieme.api.schemas import CompletionRequest
from insieme.api.wire import (
    DONE,
    SSE_HEADERS,
    collect,
    error_event,
    events_or_error,
    finish_text,
    new_id,
    now,
    parse_body,
    sse,
    usage,
)
from insieme.engine.base import OutputStream
from insieme.engine.types import FinishReason, GenerationRequest
from insieme.errors import InternalError, InvalidRequestError


def _single_prompt(ctx: AppContext, body: CompletionRequest) -> list[int]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return ctx.engine.tokenize(prompt)
    if prompt and all(isinstance(t, int) for t in prompt):
        vocab = ctx.engine.info.n_vocab
        ids = [int(t) for t in prompt]  # type: ignore[arg-type]
        if any(not 0 <= t < vocab for t in ids):
            raise InvalidRequestError("a prompt token id is outside the vocabulary",
                                      param="prompt")
        return ids
    if isinstance(prompt, list) and len(prompt) == 1:
        only = prompt[0]
        return ctx.engine.tokenize(only) if isinstance(only, str) else list(only)  # type: ignore[arg-type]
    raise InvalidRequestError(
        "send one prompt per request (a string or a list of token ids)", param="prompt"
    )


async def create_completion(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await parse_body(request, CompletionRequest)
    prompting.check_model(ctx.config, body.model)
    prompting.reject_unsupported(body)
    if body.echo:
        raise InvalidRequestError("echo is not supported by this server yet", param="echo")
    tokens = _single_prompt(ctx, body)
    tokens, max_tokens = prompting.fit_to_context(
        ctx.engine, ctx.config, body, tokens, body.max_tokens
    )
    params = prompting.sampling_params(body, max_tokens)
    request_id = new_id("cmpl")
    stream = ctx.engine.submit(GenerationRequest(request_id, tokens, params, body.n))
    model = ctx.config.model_id
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _completion_events(stream, request_id, model, body.n, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    result = await collect(stream, request, body.n)
    return JSONResponse(
        {
            "id": request_id,
            "object": "text.completion",
            "created": now(),
            "model": model,
            "prompt": [],
            "choices": [
                {"index": i, "text": result.text(i), "finish_reason": result.finish[i],
                 "logprobs": None}
                for i in range(body.n)
            ],
            "usage": usage(result.prompt_tokens, result.completion_tokens, result.cached_tokens),
        }
    )


async def _completion_events(
    stream: OutputStream, request_id: str, model: str, n: int, include_usage: bool
) -> AsyncIterator[bytes]:
    created = now()
    open_choices = n
    completion_tokens = 0
    async for output in events_or_error(stream):
        if output.finish_reason is FinishReason.ERROR:
            yield error_event(InternalError(output.error or "the engine failed"))
            return
        finish = finish_text(output.finish_reason)
        token = output.token
        chunk: dict[str, Any] = {
            "id": request_id,
            "object": "completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": output.index, "text": output.text, "finish_reason": finish,
                 "logprobs": None}
            ],
            "token": None
            if token is None
            else {"id": token.id, "text": output.text, "logprob": token.logprob,
                  "special": token.special},
            "finish_reason": finish,
            "usage": None,
        }
        if finish is not None:
            open_choices -= 1
            completion_tokens += output.completion_tokens
            totals = usage(output.prompt_tokens, completion_tokens, output.cached_tokens)
            if open_choices == 0 and not include_usage:
                chunk["usage"] = totals
        yield sse(chunk)
        if finish is not None and open_choices == 0 and include_usage:
            yield sse({"id": request_id, "object": "completion.chunk", "created": created,
                       "model": model, "choices": [], "usage": totals})
    yield DONE
