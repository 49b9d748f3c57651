"""The streaming client against scripted responses (httpx's MockTransport, no network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from insieme.bench.client import BenchError, SSEDecoder, list_models, stream_chat
from insieme.bench.metrics import summarize
from insieme.bench.settings import BenchSettings

URL = "http://server.test/v1/chat/completions"
SSE = {"content-type": "text/event-stream; charset=utf-8"}


def chunk(content: str | None, *, role: bool = False, finish: str | None = None,
          usage: dict[str, int] | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"content": content}
    if role:
        delta["role"] = "assistant"
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage}


def sse(*events: dict[str, Any] | str) -> bytes:
    return b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )


async def request(handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await stream_chat(client, URL, {"model": "m"}, {})


def test_sse_decoder_skips_comments_and_joins_data_lines() -> None:
    decoder = SSEDecoder()
    lines = [": ping", "", "event: x", "data: {\"a\":", "data:1}", "", "id: 7", "data: [DONE]"]
    assert [d for line in lines if (d := decoder.feed(line)) is not None] == ['{"a":\n1}']
    assert decoder.flush() == "[DONE]"
    assert decoder.flush() is None


async def test_stream_with_usage_chunk_and_comments() -> None:
    body = (b": keep-alive\n\n"
            + sse(chunk("", role=True), chunk("Hel"), chunk("lo"), chunk("!"),
                  chunk("", finish="stop"))
            + b": another comment\n\n"
            + sse({"object": "chat.completion.chunk", "choices": [],
                   "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}},
                  "[DONE]"))
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=body))
    assert record.ok
    assert len(record.chunk_times) == 3  # empty deltas are not content chunks
    assert record.output_tokens == 4 and record.prompt_tokens == 7
    assert record.output_len == 4
    assert record.e2e is not None and record.e2e >= record.chunk_times[-1]
    assert record.text == "Hello!"  # what a multi-turn conversation sends back


async def test_usage_on_the_finishing_chunk_counts_too() -> None:
    # Together's default: usage rides on the last chunk with choices.
    body = sse(chunk("a"), chunk("b", finish="stop", usage={"prompt_tokens": 1,
                                                            "completion_tokens": 2}), "[DONE]")
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=body))
    assert record.output_tokens == 2


async def test_cached_prompt_tokens_are_read_from_usage_details() -> None:
    usage = {"prompt_tokens": 40, "completion_tokens": 2,
             "prompt_tokens_details": {"cached_tokens": 36}}
    body = sse(chunk("a"), chunk("b", finish="stop", usage=usage), "[DONE]")
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=body))
    assert (record.prompt_tokens, record.cached_tokens) == (40, 36)
    level = summarize([record, record], concurrency=1, duration_s=1.0)
    assert (level.total_input_tokens, level.total_cached_tokens) == (80, 72)


async def test_without_usage_tokens_are_counted_as_chunks() -> None:
    body = sse(chunk("a"), chunk("b"), chunk("c"), "[DONE]")
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=body))
    assert record.ok and record.output_tokens is None and record.output_len == 3


async def test_timings_follow_the_stream() -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.05)
        yield sse(chunk("first"))
        await asyncio.sleep(0.03)
        yield sse(chunk("second"))
        yield sse("[DONE]")

    record = await request(lambda req: httpx.Response(200, headers=SSE, content=slow_body()))
    assert record.ttft is not None and record.ttft >= 0.05
    assert record.itl[0] >= 0.03
    assert record.e2e == record.chunk_times[-1]  # the last data chunk, not [DONE]


async def test_error_event_mid_stream() -> None:
    error = {"error": {"message": "the engine failed", "type": "server_error", "param": None,
                       "code": "internal_error"}}
    body = sse(chunk("a"), error, "[DONE]")
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=body))
    assert not record.ok
    assert (record.error, record.error_message) == ("stream_error", "the engine failed")


async def test_http_error_status_keeps_the_servers_message() -> None:
    body = {"error": {"message": "queue full", "type": "rate_limit_error", "param": None,
                      "code": "queue_full"}}
    record = await request(lambda req: httpx.Response(429, json=body))
    assert (record.error, record.error_message) == ("429", "queue full")
    record = await request(lambda req: httpx.Response(502, text="Bad Gateway"))
    assert (record.error, record.error_message) == ("502", "Bad Gateway")


async def test_a_response_that_does_not_stream_is_invalid() -> None:
    record = await request(lambda req: httpx.Response(200, json={"choices": []}))
    assert record.error == "invalid_response"
    assert "did not stream" in (record.error_message or "")


async def test_a_stream_without_chunks_is_invalid() -> None:
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=sse("[DONE]")))
    assert record.error == "invalid_response"


async def test_connection_failure_is_recorded_not_raised() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    record = await request(refuse)
    assert (record.error, record.error_message) == ("connection", "connection refused")

    def stall(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    assert (await request(stall)).error == "timeout"


async def test_a_kept_alive_connection_closed_unanswered_is_retried_once() -> None:
    tries = 0

    def close_first(req: httpx.Request) -> httpx.Response:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=req)
        return httpx.Response(200, headers=SSE, content=sse(chunk("hi"), "[DONE]"))

    record = await request(close_first)
    assert record.ok and (tries, record.reconnects) == (2, 1)

    def always_close(req: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                        request=req)

    record = await request(always_close)  # twice in a row is a failure, not a loop
    assert (record.error, record.reconnects) == ("connection", 1)


async def test_request_body_asks_for_usage() -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        return httpx.Response(200, headers=SSE, content=sse(chunk("a"), "[DONE]"))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        settings = BenchSettings(base_url="http://server.test/v1/", model="m", requests=16)
        await stream_chat(client, settings.chat_url, settings.payload(3), settings.headers())
    assert settings.chat_url == URL
    assert seen[0]["stream"] is True
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert seen[0]["max_tokens"] == 128 and seen[0]["model"] == "m"


@pytest.mark.parametrize("body", [
    {"object": "list", "data": [{"id": "a", "owned_by": "vllm"}, {"id": "b"}]},
    [{"id": "a", "owned_by": "vllm"}, {"id": "b"}],
])
async def test_list_models_reads_both_shapes(body: Any) -> None:
    transport = httpx.MockTransport(lambda req: httpx.Response(200, json=body))
    async with httpx.AsyncClient(transport=transport) as client:
        models = await list_models(client, "http://server.test/v1", {})
    assert models is not None
    assert models.ids == ("a", "b") and models.owned_by == {"a": "vllm"}


async def test_list_models_without_the_route_is_none_and_401_is_an_error() -> None:
    transport = httpx.MockTransport(lambda req: httpx.Response(404, json={"detail": "nope"}))
    async with httpx.AsyncClient(transport=transport) as client:
        assert await list_models(client, "http://server.test/v1", {}) is None
    transport = httpx.MockTransport(lambda req: httpx.Response(401, json={"detail": "bad"}))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(BenchError, match="needs an API key .*bad"):
            await list_models(client, "http://server.test/v1", {})


@pytest.mark.parametrize("event", [
    '{"choices": [{"delta": "not an object"}]}',
    '{"choices": {"0": {}}}',
    '[1, 2]',
])
async def test_odd_chunks_are_skipped_not_fatal(event: str) -> None:
    body = sse(chunk("a"), event, chunk("b"), "[DONE]")
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=body))
    assert record.ok and len(record.chunk_times) == 2


async def test_a_chunk_that_is_not_json_fails_the_request() -> None:
    body = sse(chunk("a"), "{not json", "[DONE]")
    record = await request(lambda req: httpx.Response(200, headers=SSE, content=body))
    assert record.error == "invalid_response" and "not JSON" in (record.error_message or "")
