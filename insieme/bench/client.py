"""The benchmark's HTTP side: one streamed chat completion, timed chunk by chunk.

A request never raises for a server's failure: it returns a ``RequestRecord`` whose ``error``
names what went wrong (an HTTP status, ``connection``, ``timeout``, ``stream_error``,
``invalid_response``), so one bad request cannot stop a benchmark.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from insieme.bench.metrics import RequestRecord
from insieme.errors import InsiemeError


class BenchError(InsiemeError):
    """The benchmark cannot run: the server is unreachable, refuses the key or the model."""


@dataclass(frozen=True, slots=True)
class ModelList:
    """What ``GET {base_url}/models`` said, when the server has that route."""

    ids: tuple[str, ...]
    owned_by: dict[str, str]
    server_header: str | None


class SSEDecoder:
    """Assemble server-sent events from lines; yields each event's data.

    Comment lines (``: ping``) and fields other than ``data`` are skipped; several ``data``
    lines in one event are joined with newlines, as the SSE specification says.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """Take one line (without its newline); return an event's data when one completes."""
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        """The data of an event the stream ended without a blank line after."""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


def _error_message(response: httpx.Response) -> str:
    """The human part of an error body: the contract's, FastAPI's default, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return json.dumps(body)[:200]


def _describe(exc: Exception) -> str:
    """One line for a transport failure (httpx's own messages may be empty)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    decoder = SSEDecoder()
    async for line in lines:
        data = decoder.feed(line)
        if data is not None:
            yield data
    tail = decoder.flush()
    if tail is not None:
        yield tail


async def stream_chat(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any], headers: dict[str, str]
) -> RequestRecord:
    """Send one streamed chat completion and time its content chunks.

    A kept-alive connection that the server closes instead of answering (llama-server does
    this now and then) is retried once on a new connection, as the OpenAI and Together
    SDKs do; the record counts it in ``reconnects`` and its times include the lost try.
    """
    sent = time.perf_counter()
    record = await _stream_once(client, url, payload, headers, sent)
    if record.error == "connection" and record.unanswered:
        record = await _stream_once(client, url, payload, headers, sent)
        record.reconnects = 1
    return record


async def _stream_once(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    sent: float,
) -> RequestRecord:
    record = RequestRecord()
    answered = False
    try:
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            answered = True
            if response.status_code != 200:
                await response.aread()
                record.error = str(response.status_code)
                record.error_message = _error_message(response)
                return record
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                await response.aread()
                record.error = "invalid_response"
                record.error_message = f"the server did not stream (content-type {content_type!r})"
                return record
            await _read_stream(_events(response.aiter_lines()), record, sent)
    except httpx.TransportError as exc:
        record.error = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
        record.error_message = _describe(exc)
        record.unanswered = not answered and isinstance(exc, httpx.RemoteProtocolError)
    except httpx.RequestError as exc:  # a body httpx could not decode
        record.error = "invalid_response"
        record.error_message = _describe(exc)
    return record


async def _read_stream(events: AsyncIterator[str], record: RequestRecord, sent: float) -> None:
    pieces: list[str] = []
    try:
        await _read_events(events, record, sent, pieces)
    finally:
        record.text = "".join(pieces)


async def _read_events(events: AsyncIterator[str], record: RequestRecord, sent: float,
                       pieces: list[str]) -> None:
    last_chunk: float | None = None
    done = False
    async for data in events:
        # Read on past [DONE] to the end of the body, as the openai SDK does: a response
        # left unread closes its connection, and the next request would pay for a new one.
        if done or data.strip() == "[DONE]":
            done = True
            continue
        arrived = time.perf_counter() - sent
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            record.error = "invalid_response"
            record.error_message = f"a stream event is not JSON: {data[:80]!r}"
            return
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            error = chunk["error"]
            record.error = "stream_error"
            record.error_message = str(error.get("message", error) if isinstance(error, dict)
                                       else error)
            return
        last_chunk = arrived
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            if isinstance(delta, dict) and delta.get("content"):
                record.chunk_times.append(arrived)
                pieces.append(str(delta["content"]))
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            record.output_tokens = usage["completion_tokens"]
            prompt_tokens = usage.get("prompt_tokens")
            record.prompt_tokens = prompt_tokens if isinstance(prompt_tokens, int) else None
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            record.cached_tokens = cached if isinstance(cached, int) else None
    if last_chunk is None:
        record.error = "invalid_response"
        record.error_message = "the stream ended without a single chunk"
        return
    # vllm's definition: the request ends with its last data chunk, not with [DONE].
    record.e2e = last_chunk


async def list_models(
    client: httpx.AsyncClient, base_url: str, headers: dict[str, str]
) -> ModelList | None:
    """The served models, or None when the server has no usable /models route.

    Raises ``BenchError`` when the server cannot be reached or refuses the key.
    """
    try:
        response = await client.get(f"{base_url}/models", headers=headers)
    except httpx.RequestError as exc:
        raise BenchError(f"cannot reach {base_url}: {_describe(exc)}") from exc
    if response.status_code in (401, 403):
        raise auth_error(base_url, response.status_code, _error_message(response),
                         sent_key="Authorization" in headers)
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    # together's bare list or openai's {"object": "list", "data": [...]}.
    cards = body.get("data") if isinstance(body, dict) else body
    if not isinstance(cards, list):
        return None
    ids = tuple(str(c["id"]) for c in cards if isinstance(c, dict) and c.get("id"))
    owners = {str(c["id"]): str(c["owned_by"]) for c in cards
              if isinstance(c, dict) and c.get("id") and c.get("owned_by")}
    return ModelList(ids, owners, response.headers.get("server"))


def auth_error(base_url: str, status: int, message: str, *, sent_key: bool) -> BenchError:
    """The one line for a missing or refused key, with what to do about it."""
    what = "refused the API key" if sent_key else "needs an API key"
    return BenchError(f"{base_url} {what} (HTTP {status}: {message}); "
                      "pass --api-key or set TOGETHER_API_KEY")
