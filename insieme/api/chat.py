"""POST /v1/chat/completions: streamed (SSE) and not, in Together's and OpenAI's shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from insieme.api import prompting
from insieme.api.context import AppContext
from insieme.api.schemas import ChatCompletionRequest
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
from insieme.errors import InternalError


async def create_chat_completion(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await parse_body(request, ChatCompletionRequest)
    prompting.check_model(ctx.config, body.model)
    prompting.reject_unsupported(body)
    messages = prompting.chat_messages(body.messages)
    prompt_text = ctx.engine.render_chat(messages)
    tokens = ctx.engine.tokenize(prompt_text)
    requested = body.max_completion_tokens or body.max_tokens
    tokens, max_tokens = prompting.fit_to_context(ctx.engine, ctx.config, body, tokens, requested)
    params = prompting.sampling_params(body, max_tokens)
    request_id = new_id("chatcmpl")
    stream = ctx.engine.submit(GenerationRequest(request_id, tokens, params, body.n))
    model = ctx.config.model_id
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _chat_events(stream, request_id, model, body.n, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    result = await collect(stream, request, body.n)
    return JSONResponse(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "prompt": [],
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": result.text(i), "tool_calls": None},
                    "finish_reason": result.finish[i],
                    "logprobs": None,
                }
                for i in range(body.n)
            ],
            "usage": usage(result.prompt_tokens, result.completion_tokens, result.cached_tokens),
        }
    )


async def _chat_events(
    stream: OutputStream, request_id: str, model: str, n: int, include_usage: bool
) -> AsyncIterator[bytes]:
    created = now()
    started = [False] * n
    texts: list[list[str]] = [[] for _ in range(n)]
    open_choices = n
    completion_tokens = 0
    async for output in events_or_error(stream):
        if output.finish_reason is FinishReason.ERROR:
            yield error_event(InternalError(output.error or "the engine failed"))
            return
        delta: dict[str, Any] = {"content": output.text, "tool_calls": None}
        if not started[output.index]:
            started[output.index] = True
            delta = {"role": "assistant", **delta}
        token = output.token
        if token is not None:
            delta["token_id"] = token.id
        texts[output.index].append(output.text)
        finish = finish_text(output.finish_reason)
        chunk: dict[str, Any] = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": output.index, "delta": delta, "finish_reason": finish, "logprobs": None}
            ],
            "token": None
            if token is None
            else {"id": token.id, "text": output.text, "logprob": token.logprob,
                  "special": token.special},
            "finish_reason": finish,
            "generated_text": None,
            "stats": None,
            "usage": None,
        }
        if finish is not None:
            open_choices -= 1
            completion_tokens += output.completion_tokens
            chunk["generated_text"] = "".join(texts[output.index])
            totals = usage(output.prompt_tokens, completion_tokens, output.cached_tokens)
            if open_choices == 0 and not include_usage:
                chunk["usage"] = totals
        yield sse(chunk)
        if finish is not None and open_choices == 0 and include_usage:
            yield sse(
                {
                    "id": request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": totals,
                }
            )
    yield DONE
