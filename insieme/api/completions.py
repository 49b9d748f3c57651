"""POST /v1/completions: the legacy text-completion route, streamed and not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from insieme.api import admission, logprobs, routing
from insieme.api.context import AppContext
from insieme.api.schemas import CompletionRequest
from insieme.api.streaming import (
    Collected,
    collect,
    finish_text,
    now,
    parse_body,
    sse_events,
    usage,
)
from insieme.engine.types import PromptToken, StepOutput, TokenInfo


async def create_completion(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await parse_body(request, CompletionRequest,
                            max_depth=ctx.config.limits.max_json_depth)
    record = request.state.record
    entry = routing.find_model(ctx, record, body.model, "chat")
    echo = _Echo.of(request, body) if body.echo else None
    objects = _TOGETHER_OBJECTS if _from_together(request) else _OPENAI_OBJECTS

    def chunks(admitted: admission.Admitted) -> AsyncIterator[bytes]:
        reply = _Reply(admitted.request_id, entry.name, body.n, admitted.options, echo, objects)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_events(admitted.stream, body.n, include_usage, _CompletionChunks(reply))

    admitted = await routing.generate(
        ctx, record, entry, body.stream,
        lambda engine: admission.completion(ctx, record, body, engine), chunks)
    if isinstance(admitted, Response):
        return admitted
    reply = _Reply(admitted.request_id, entry.name, body.n, admitted.options, echo, objects)
    stream, request_id = admitted.stream, admitted.request_id
    result = await collect(stream, request, body.n)
    return JSONResponse(
        {
            "id": request_id,
            "object": reply.objects.whole,
            "created": now(),
            "model": reply.model,
            "prompt": reply.prompt_field(result.prompt),
            "choices": [reply.choice(i, result) for i in range(body.n)],
            "usage": usage(result.prompt_tokens, result.completion_tokens, result.cached_tokens),
        }
    )


def _from_together(request: Request) -> bool:
    return request.headers.get("user-agent", "").lower().startswith("together")


@dataclass(frozen=True, slots=True)
class _Objects:
    """The ``object`` of a whole response and of a stream chunk, as the client's SDK types
    them. Together's (together 1.x/3.x, together-ai) declare ``text.completion`` and
    ``completion.chunk``; openai's ``Completion`` is ``Literal["text_completion"]`` and its
    stream yields that same model, so strict validation rejects both of Together's names."""

    whole: str
    chunk: str


_TOGETHER_OBJECTS = _Objects(whole="text.completion", chunk="completion.chunk")
_OPENAI_OBJECTS = _Objects(whole="text_completion", chunk="text_completion")


@dataclass(frozen=True, slots=True)
class _Echo:
    """``echo``: OpenAI puts the prompt in front of the text (and its tokens in front of the
    logprobs), Together in a separate ``prompt`` field. Every response gets the field; the
    text gets the prompt too unless the client is one of Together's SDKs."""

    text: str | None  # the prompt as sent, when it was text
    in_text: bool

    @classmethod
    def of(cls, request: Request, body: CompletionRequest) -> _Echo:
        prompt = body.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        return cls(prompt if isinstance(prompt, str) else None,
                   in_text=not _from_together(request))

    def text_of(self, prompt: Sequence[PromptToken] | None) -> str:
        if self.text is not None:
            return self.text
        return b"".join(t.piece for t in prompt or ()).decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class _Reply:
    request_id: str
    model: str
    n: int
    options: logprobs.LogprobOptions | None
    echo: _Echo | None
    objects: _Objects

    def prompt_field(self, prompt: Sequence[PromptToken] | None) -> list[dict[str, Any]]:
        if self.echo is None:
            return []
        scored = (logprobs.together_object(prompt or (), self.options.top)
                  if self.options else None)
        return [{"text": self.echo.text_of(prompt), "logprobs": scored}]

    def choice(self, index: int, result: Collected) -> dict[str, Any]:
        """One choice of a whole (non-streamed) response."""
        text = result.text(index)
        tokens: list[PromptToken | TokenInfo] = [t for t in result.tokens[index]
                                                 if not (t.special and not t.text)]
        if self.echo is not None and self.echo.in_text:
            text = self.echo.text_of(result.prompt) + text
            tokens = [*(result.prompt or ()), *tokens]
        return {"index": index, "text": text, "finish_reason": result.finish[index],
                "logprobs": (logprobs.completion_object(tokens, self.options)
                             if self.options else None)}


class _CompletionChunks:
    """The chunks of a streamed completion (``sse_events`` does the usage and the end)."""

    def __init__(self, reply: _Reply) -> None:
        self.reply = reply
        self.created = now()
        self.started = [False] * reply.n
        self.offsets = [0] * reply.n  # OpenAI's text_offset, per choice

    def chunks(self, output: StepOutput) -> list[dict[str, Any]]:
        reply, index, token = self.reply, output.index, output.token
        text = output.text
        counted = token if token is not None and not (token.special and not token.text) else None
        lp = logprobs.chunk_fields(counted, reply.options, completion=True,
                                   offset=self.offsets[index])
        extra: dict[str, Any] = {}
        if not self.started[index]:
            self.started[index] = True
            if reply.echo is not None:
                if output.prompt is not None:
                    extra["prompt"] = reply.prompt_field(output.prompt)
                if reply.echo.in_text:
                    text = reply.echo.text_of(output.prompt) + text
                    if reply.options is not None and reply.options.openai:
                        lp = {"logprobs": logprobs.completion_object(
                            [*(output.prompt or ()), *([counted] if counted else [])],
                            reply.options)}
        self.offsets[index] += len(text)
        finish = finish_text(output.finish_reason)
        return [{
            "id": reply.request_id,
            "object": reply.objects.chunk,
            "created": self.created,
            "model": reply.model,
            "choices": [{"index": index, "text": text, "finish_reason": finish, **lp}],
            "token": None if token is None else {"id": token.id, "text": output.text,
                                                 "logprob": token.logprob,
                                                 "special": token.special},
            "finish_reason": finish,
            "usage": None,
            **extra,
        }]

    def usage_chunk(self, totals: dict[str, Any]) -> dict[str, Any]:
        reply = self.reply
        return {"id": reply.request_id, "object": reply.objects.chunk, "created": self.created,
                "model": reply.model, "choices": [], "usage": totals}
