"""Small helpers shared by the routes: JSON bodies in, SSE events and usage out."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

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
    # pydantic adds the union branch's type name to the location ('str', 'list[str]', ...):
    # keep only names and indices, which is what a client can act on.
    kept = [str(p) for p in loc if isinstance(p, int) or ("[" not in p and p not in _TYPE_TAGS)]
    return ".".join(kept)


_TYPE_TAGS = {"str", "int", "float", "bool", "function-after", "constrained-int"}


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


async def events_or_error(stream: OutputStream) -> AsyncIterator[StepOutput]:
    """Iterate a stream, always closing it (which cancels the request if unfinished)."""
    try:
        async for output in stream:
            yield output
    finally:
        await stream.aclose()
