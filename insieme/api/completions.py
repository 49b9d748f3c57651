"""POST /v1/completions: the legacy text-completion route, streamed and not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from insieme.api import admission, logprobs, prompting
from insieme.api.context import AppContext
from insieme.api.schemas import CompletionRequest
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
from insieme.engine.base import OutputStream
from insieme.engine.types import FinishReason, GenerationRequest, PromptToken, TokenInfo
from insieme.errors import InvalidRequestError


async def _single_prompt(ctx: AppContext, body: CompletionRequest) -> list[int]:
    prompt = body.prompt
    # Special token text in a string is parsed: the caller wrote the whole prompt.
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        prompting.check_prompt_size(len(prompt), ctx.config.limits,
                                    ctx.engine.info.max_model_len, "prompt")
        return await ctx.engine.tokenize(prompt)
    if prompt and all(isinstance(t, int) for t in prompt):
        vocab = ctx.engine.info.n_vocab
        ids = [int(t) for t in prompt]  # type: ignore[arg-type]
        if any(not 0 <= t < vocab for t in ids):
            raise InvalidRequestError("a prompt token id is outside the vocabulary",
                                      param="prompt")
        return ids
    if isinstance(prompt, list) and len(prompt) == 1:
        return list(prompt[0])  # type: ignore[arg-type]
    raise InvalidRequestError(
        "send one prompt per request (a string or a list of token ids)", param="prompt"
    )


async def create_completion(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await parse_body(request, CompletionRequest,
                            max_depth=ctx.config.limits.max_json_depth)
    prompting.check_model(ctx.config, body.model)
    options = logprobs.options(body)
    tokens = await _single_prompt(ctx, body)
    tokens, max_tokens = prompting.fit_to_context(
        ctx.engine, ctx.config, body, tokens, body.max_tokens
    )
    params = prompting.sampling_params(body, max_tokens, n_vocab=ctx.engine.info.n_vocab,
                                       logprobs=options, echo=bool(body.echo),
                                       limits=ctx.config.limits)
    request_id = new_id("cmpl")
    stream = await admission.submit(ctx, request.state.record,
                                    GenerationRequest(request_id, tokens, params, body.n))
    echo = _Echo.of(request, body) if body.echo else None
    objects = _TOGETHER_OBJECTS if _from_together(request) else _OPENAI_OBJECTS
    reply = _Reply(request_id, ctx.config.model_id, body.n, options, echo, objects)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _completion_events(stream, reply, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
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


async def _completion_events(stream: OutputStream, reply: _Reply,
                             include_usage: bool) -> AsyncIterator[bytes]:
    created = now()
    started = [False] * reply.n
    offsets = [0] * reply.n
    open_choices = reply.n
    completion_tokens = 0
    async for output in events_or_error(stream):
        if output.finish_reason is FinishReason.ERROR:
            yield error_event(failure(output))
            return
        index = output.index
        finish = finish_text(output.finish_reason)
        token = output.token
        text = output.text
        counted = token if token is not None and not (token.special and not token.text) else None
        lp = logprobs.chunk_fields(counted, reply.options, completion=True,
                                   offset=offsets[index])
        extra: dict[str, Any] = {}
        if not started[index]:
            started[index] = True
            if reply.echo is not None:
                if output.prompt is not None:
                    extra["prompt"] = reply.prompt_field(output.prompt)
                if reply.echo.in_text:
                    prompt_text = reply.echo.text_of(output.prompt)
                    text = prompt_text + text
                    if reply.options is not None and reply.options.openai:
                        lp = {"logprobs": logprobs.completion_object(
                            [*(output.prompt or ()), *([counted] if counted else [])],
                            reply.options)}
        offsets[index] += len(text)
        chunk: dict[str, Any] = {
            "id": reply.request_id,
            "object": reply.objects.chunk,
            "created": created,
            "model": reply.model,
            "choices": [{"index": index, "text": text, "finish_reason": finish, **lp}],
            "token": None
            if token is None
            else {"id": token.id, "text": output.text, "logprob": token.logprob,
                  "special": token.special},
            "finish_reason": finish,
            "usage": None,
            **extra,
        }
        if finish is not None:
            open_choices -= 1
            completion_tokens += output.completion_tokens
            totals = usage(output.prompt_tokens, completion_tokens, output.cached_tokens)
            if open_choices == 0 and not include_usage:
                chunk["usage"] = totals
        yield sse(chunk)
        if finish is not None and open_choices == 0 and include_usage:
            yield sse({"id": reply.request_id, "object": reply.objects.chunk, "created": created,
                       "model": reply.model, "choices": [], "usage": totals})
    yield DONE
