"""POST /v1/chat/completions: streamed (SSE) and not, in Together's and OpenAI's shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from insieme.api import admission, logprobs, routing, tools
from insieme.api.context import AppContext
from insieme.api.schemas import ChatCompletionRequest
from insieme.api.streaming import (
    Collected,
    collect,
    finish_text,
    now,
    parse_body,
    sse_events,
    usage,
)
from insieme.engine.types import StepOutput, TokenInfo


async def create_chat_completion(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await parse_body(request, ChatCompletionRequest,
                            max_depth=ctx.config.limits.max_json_depth)
    record = request.state.record
    entry = routing.find_model(ctx, record, body.model, "chat")

    def chunks(admitted: admission.Admitted) -> AsyncIterator[bytes]:
        reply = _Reply(admitted.request_id, entry.name, body.n, admitted.tool_plan,
                       admitted.options)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_events(admitted.stream, body.n, include_usage, _ChatChunks(reply))

    admitted = await routing.generate(
        ctx, record, entry, body.stream,
        lambda engine: admission.chat(ctx, record, body, engine), chunks)
    if isinstance(admitted, Response):
        return admitted
    stream, request_id, options = admitted.stream, admitted.request_id, admitted.options
    echo = bool(body.echo)
    reply = _Reply(request_id, entry.name, body.n, admitted.tool_plan, options)
    result = await collect(stream, request, body.n)
    prompt: list[dict[str, Any]] = []
    if echo:
        prompt_logprobs = (logprobs.together_object(result.prompt or (), options.top)
                           if options else None)
        prompt = [{"text": admitted.prompt_text, "logprobs": prompt_logprobs}]
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


class _ChatChunks:
    """The chunks of a streamed chat completion (``sse_events`` does the usage and the end):
    the first delta of a choice carries the role, the last the finish and Together's
    ``generated_text``; a tool call goes out whole, one call a chunk, after the text."""

    def __init__(self, reply: _Reply) -> None:
        self.reply = reply
        self.created = now()
        n = reply.n
        self.started = [False] * n
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.calls = ([tools.CallStream(reply.tool_plan) for _ in range(n)]
                      if reply.reads_calls and reply.tool_plan is not None else None)

    def chunks(self, output: StepOutput) -> list[dict[str, Any]]:
        reply, index, calls = self.reply, output.index, self.calls
        self.texts[index].append(output.text)
        content = output.text if calls is None else calls[index].feed(output.text)
        finish = finish_text(output.finish_reason)
        tool_calls: list[dict[str, Any]] = []
        if finish is not None and calls is not None:
            rest, tool_calls = calls[index].finish()
            content += rest
            if tool_calls and finish == "stop":
                finish = "tool_calls"
        delta: dict[str, Any] = {"content": content, "tool_calls": None}
        if not self.started[index]:
            self.started[index] = True
            delta = {"role": "assistant", **delta}
        token = output.token
        if token is not None:
            delta["token_id"] = token.id
        chunks = [reply.chunk(self.created, index, delta, None if tool_calls else finish, token,
                              output.text)]
        for k, call in enumerate(tool_calls):
            chunks.append(reply.chunk(self.created, index, {"content": None, "tool_calls": [
                {"index": k, **call}]}, finish if k == len(tool_calls) - 1 else None))
        if finish is not None:
            chunks[-1]["generated_text"] = "".join(self.texts[index])
        return chunks

    def usage_chunk(self, totals: dict[str, Any]) -> dict[str, Any]:
        reply = self.reply
        return {"id": reply.request_id, "object": "chat.completion.chunk",
                "created": self.created, "model": reply.model, "choices": [], "usage": totals}
