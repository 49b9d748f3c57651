"""POST /v1/chat/completions: streamed (SSE) and not, in Together's and OpenAI's shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from insieme.api import admission, logprobs, prompting, structured, tools
from insieme.api.context import AppContext
from insieme.api.schemas import ChatCompletionRequest
from insieme.api.streaming import (
    DONE,
    SSE_HEADERS,
    Collected,
    collect,
    error_event,
    events_or_error,
    failure,
    finish_text,
    new_id,
    now,
    parse_body,
    sse,
    usage,
)
from insieme.config import LimitsConfig
from insieme.engine.base import OutputStream
from insieme.engine.constraints import Constraint
from insieme.engine.types import FinishReason, GenerationRequest, TokenInfo


async def create_chat_completion(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    limits = ctx.config.limits
    body = await parse_body(request, ChatCompletionRequest, max_depth=limits.max_json_depth)
    prompting.check_model(ctx.config, body.model)
    options = logprobs.options(body)
    prompting.stop_strings(body, limits)  # refused before any work is done
    tool_plan = tools.plan(body, limits)
    messages = prompting.chat_messages(body.messages, limits)
    prompting.check_prompt_size(sum(len(m["content"]) for m in messages), limits,
                                ctx.engine.info.max_model_len, "messages")
    constraint = _constraint(body, tool_plan, limits)  # the engine compiles it, off the loop
    prompt = await ctx.engine.render_chat(messages,
                                          tools=tool_plan.offered if tool_plan else None)
    prompt_text, tokens = prompt.text, prompt.tokens
    requested = body.max_completion_tokens or body.max_tokens
    tokens, max_tokens = prompting.fit_to_context(ctx.engine, ctx.config, body, tokens, requested)
    echo = bool(body.echo) and not body.stream  # Together's ``prompt`` field, whole responses
    params = prompting.sampling_params(body, max_tokens, n_vocab=ctx.engine.info.n_vocab,
                                       constraint=constraint, logprobs=options, echo=echo,
                                       limits=limits)
    request_id = new_id("chatcmpl")
    stream = await admission.submit(ctx, request.state.record,
                                    GenerationRequest(request_id, tokens, params, body.n))
    reply = _Reply(request_id, ctx.config.model_id, body.n, tool_plan, options)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _chat_events(stream, reply, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    result = await collect(stream, request, body.n)
    prompt: list[dict[str, Any]] = []
    if echo:
        prompt_logprobs = (logprobs.together_object(result.prompt or (), options.top)
                           if options else None)
        prompt = [{"text": prompt_text, "logprobs": prompt_logprobs}]
    return JSONResponse(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": now(),
            "model": reply.model,
            "prompt": prompt,
            "choices": [reply.choice(i, result) for i in range(body.n)],
            "usage": usage(result.prompt_tokens, result.completion_tokens, result.cached_tokens),
        }
    )


def _constraint(body: ChatCompletionRequest, tool_plan: tools.ToolPlan | None,
                limits: LimitsConfig) -> Constraint | None:
    """What ``tool_choice`` or ``response_format`` asks the output to be."""
    if tool_plan is not None and tool_plan.enforced:
        return tools.call_constraint(tool_plan, limits)
    return structured.response_constraint(body.response_format, limits)


@dataclass(frozen=True, slots=True)
class _Reply:
    """What shapes a response besides the text: its id, tools and logprob options."""

    request_id: str
    model: str
    n: int
    tool_plan: tools.ToolPlan | None
    options: logprobs.LogprobOptions | None

    @property
    def reads_calls(self) -> bool:
        return self.tool_plan is not None and bool(self.tool_plan.callable_names)

    def choice(self, index: int, result: Collected) -> dict[str, Any]:
        """One choice of a whole (non-streamed) response."""
        content: str | None = result.text(index)
        finish = result.finish[index]
        calls: list[dict[str, Any]] = []
        if self.reads_calls and content is not None:
            assert self.tool_plan is not None
            content, calls = tools.parse_calls(content, self.tool_plan.callable_names)
            if calls:
                content = content.strip() or None
                finish = "tool_calls" if finish == "stop" else finish
        tokens = [t for t in result.tokens[index] if not _end_token(t)]
        return {
            "index": index,
            "message": {"role": "assistant", "content": content, "tool_calls": calls or None},
            "finish_reason": finish,
            "logprobs": logprobs.chat_object(tokens, self.options) if self.options else None,
        }

    def chunk(self, created: int, index: int, delta: dict[str, Any], finish: str | None,
              token: TokenInfo | None = None, text: str = "") -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": finish,
                  **logprobs.chunk_fields(None if token is None or _end_token(token) else token,
                                          self.options)}
        return {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": self.model,
            "choices": [choice],
            "token": None if token is None else {"id": token.id, "text": text,
                                                 "logprob": token.logprob,
                                                 "special": token.special},
            "finish_reason": finish,
            "generated_text": None,
            "stats": None,
            "usage": None,
        }


def _end_token(token: TokenInfo) -> bool:
    """The end-of-generation token: not part of the content, so not in its logprobs."""
    return token.special and not token.text


async def _chat_events(stream: OutputStream, reply: _Reply,
                       include_usage: bool) -> AsyncIterator[bytes]:
    created = now()
    n = reply.n
    started = [False] * n
    texts: list[list[str]] = [[] for _ in range(n)]
    calls = ([tools.CallStream(reply.tool_plan) for _ in range(n)]
             if reply.reads_calls and reply.tool_plan is not None else None)
    open_choices = n
    completion_tokens = 0
    async for output in events_or_error(stream):
        if output.finish_reason is FinishReason.ERROR:
            yield error_event(failure(output))
            return
        index = output.index
        texts[index].append(output.text)
        content = output.text if calls is None else calls[index].feed(output.text)
        finish = finish_text(output.finish_reason)
        tool_calls: list[dict[str, Any]] = []
        if finish is not None and calls is not None:
            rest, tool_calls = calls[index].finish()
            content += rest
            if tool_calls and finish == "stop":
                finish = "tool_calls"
        delta: dict[str, Any] = {"content": content, "tool_calls": None}
        if not started[index]:
            started[index] = True
            delta = {"role": "assistant", **delta}
        token = output.token
        if token is not None:
            delta["token_id"] = token.id
        # A tool call goes out whole, one call per chunk, after the last token's chunk.
        chunks = [reply.chunk(created, index, delta, None if tool_calls else finish, token,
                              output.text)]
        for k, call in enumerate(tool_calls):
            chunks.append(reply.chunk(created, index, {"content": None, "tool_calls": [
                {"index": k, **call}]}, finish if k == len(tool_calls) - 1 else None))
        last = chunks[-1]
        if finish is not None:
            open_choices -= 1
            completion_tokens += output.completion_tokens
            last["generated_text"] = "".join(texts[index])
            totals = usage(output.prompt_tokens, completion_tokens, output.cached_tokens)
            if open_choices == 0 and not include_usage:
                last["usage"] = totals
        for chunk in chunks:
            yield sse(chunk)
        if finish is not None and open_choices == 0 and include_usage:
            yield sse(
                {
                    "id": reply.request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": reply.model,
                    "choices": [],
                    "usage": totals,
                }
            )
    yield DONE
