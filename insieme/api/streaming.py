"""Small helpers shared by the routes: JSON bodies in, SSE events and usage out."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from insieme.engine.base import OutputStream
from insieme.engine.types import FinishReason, PromptToken, StepOutput, TokenInfo
from insieme.errors import APIError, InternalError, InvalidRequestError

Body = TypeVar("Body", bound=BaseModel)

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class EndedByServer(StepOutput):
    """The last output of a request the server ended itself (its time limit, a shutdown past
    its grace), with the error to send in the contract's shape."""

    reason: APIError | None = None


def failure(output: StepOutput) -> APIError:
    """The error for an output that ended its request with ``FinishReason.ERROR``."""
    if isinstance(output, EndedByServer) and output.reason is not None:
        return output.reason
    return InternalError(output.error or "the engine failed on this request")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse(obj: Any) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode()


def error_event(error: APIError) -> bytes:
    return sse(error.body())


async def parse_body(request: Request, model: type[Body], *, max_depth: int = 64) -> Body:
    """Read and validate a JSON body; every failure is a 400 naming the parameter.

    Nesting deeper than ``max_depth`` is refused before anything recursive (validation,
    schema checks, grammar building, templates) sees the body.
    """
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    except RecursionError:  # deeper than the parser's own limit
        raise _too_deep(max_depth) from None
    if json_depth(data, max_depth) > max_depth:
        raise _too_deep(max_depth)
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Unions report one error per branch; the first names the field well enough.
        param = _field_path(first["loc"]) or None
        if first["type"] == "missing":
            message = f"'{param}' is a required parameter"
        else:
            message = f"invalid value for '{param}': {first['msg']}"
        raise InvalidRequestError(message, param=param) from exc


def _too_deep(limit: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"the request body is nested more than {limit} levels deep (--max-json-depth)",
        code="json_too_deep")


def json_depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests (a scalar is 0), counted without recursion and only up
    to ``limit + 1``."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        pending.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def _field_path(loc: tuple[Any, ...]) -> str:
    # pydantic adds the union branch's type to the location ('str', 'list[str]',
    # 'constrained-str', ...) and a tagged union's tag after the field: keep only names and
    # indices, which is what a client can act on.
    kept: list[str] = []
    previous: Any = None
    for part in loc:
        tag = isinstance(previous, str) and part in _UNION_TAGS.get(previous, ())
        previous = part
        if isinstance(part, int):
            kept.append(str(part))
        elif not (tag or "[" in part or part in _TYPE_TAGS
                  or part.startswith(("constrained-", "function-"))):
            kept.append(part)
    return ".".join(kept)


_TYPE_TAGS = {"str", "int", "float", "bool", "NamedToolChoice"}
# Tagged unions: the tag pydantic puts after the field's name.
_UNION_TAGS = {"response_format": {"text", "json_object", "json_schema"}}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def finish_text(reason: FinishReason | None) -> str | None:
    return None if reason is None else reason.value


class Collected:
    """A finished non-streamed request: text, tokens and finish reason per choice, usage, and
    the prompt's tokens when the request asked for ``echo``."""

    def __init__(self, n: int) -> None:
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.tokens: list[list[TokenInfo]] = [[] for _ in range(n)]
        self.prompt: tuple[PromptToken, ...] | None = None
        self.finish: list[str] = ["stop"] * n
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0

    def text(self, index: int) -> str:
        return "".join(self.texts[index])


async def collect(stream: OutputStream, request: Request, n: int) -> Collected:
    """Drain a stream for a non-streamed response; stop the request if the client leaves."""
    result = Collected(n)

    async def drain() -> None:
        async for output in stream:
            _raise_if_failed(output)
            result.texts[output.index].append(output.text)
            if output.token is not None:
                result.tokens[output.index].append(output.token)
            if output.prompt is not None:
                result.prompt = output.prompt
            if output.finish_reason is not None:
                result.finish[output.index] = output.finish_reason.value
                result.prompt_tokens = output.prompt_tokens
                result.cached_tokens = output.cached_tokens
                result.completion_tokens += output.completion_tokens

    task = asyncio.ensure_future(drain())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                await asyncio.wait({task})
                raise ClientDisconnect()  # nobody to answer: the app drops it quietly
        await task
    finally:
        await stream.aclose()
    return result


def _raise_if_failed(output: StepOutput) -> None:
    if output.finish_reason is FinishReason.ERROR:
        raise failure(output)


class ChunkWriter(Protocol):
    """What a route says about its stream: the chunks for one engine output (the last of
    them carries the choice's finish), and the closing usage-only chunk of include_usage."""

    def chunks(self, output: StepOutput) -> list[dict[str, Any]]: ...

    def usage_chunk(self, totals: dict[str, Any]) -> dict[str, Any]: ...


async def sse_events(stream: OutputStream, n: int, include_usage: bool,
                     writer: ChunkWriter) -> AsyncIterator[bytes]:
    """The SSE body of a streamed completion, chat or text: the writer's chunks, usage on the
    last choice's last chunk (Together's default) or in one more chunk with no choices
    (OpenAI's ``stream_options.include_usage``), an error event if the engine fails the
    request, then ``[DONE]``."""
    open_choices = n
    completion_tokens = 0
    async for output in events_or_error(stream):
        if output.finish_reason is FinishReason.ERROR:
            yield error_event(failure(output))
            return
        chunks = writer.chunks(output)
        totals: dict[str, Any] | None = None
        if output.finish_reason is not None:
            open_choices -= 1
            completion_tokens += output.completion_tokens
            if open_choices == 0:
                totals = usage(output.prompt_tokens, completion_tokens, output.cached_tokens)
                if not include_usage:
                    chunks[-1]["usage"] = totals
        for chunk in chunks:
            yield sse(chunk)
        if totals is not None and include_usage:
            yield sse(writer.usage_chunk(totals))
    yield DONE


async def events_or_error(stream: OutputStream) -> AsyncIterator[StepOutput]:
    """Iterate a stream, always closing it (which cancels the request if unfinished)."""
    try:
        async for output in stream:
            yield output
    finally:
        await stream.aclose()
