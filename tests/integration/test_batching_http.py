"""Batching seen from HTTP: dropped streams leave the engine, a full queue answers 429 at
once, and every admitted request still completes."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest

from tests.conftest import MODEL, Server, start_real_server, stop_server

pytestmark = pytest.mark.model

MESSAGES = [{"role": "user", "content": "Write a poem about the ocean."}]


async def ttft(client: httpx.AsyncClient, server: Server) -> float:
    started = time.monotonic()
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "stream": True}
    async with client.stream("POST", f"{server.base_url}/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                return time.monotonic() - started
    raise AssertionError("no token")


async def drop_after_first_token(client: httpx.AsyncClient, server: Server, i: int) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Story number {i}."}],
            "max_tokens": 400, "stream": True}
    async with client.stream("POST", f"{server.base_url}/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                return  # leaving the block closes the connection mid-stream


async def engine_idle(server: Server, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            health = (await client.get(f"{server.root}/health")).json()
            if health["running"] == 0 and health["waiting"] == 0:
                return health
            if time.monotonic() > deadline:
                return health
            await asyncio.sleep(0.05)


async def test_dropped_streams_leave_the_engine(real_server: Server) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        idle = statistics.median([await ttft(client, real_server) for _ in range(3)])
        # Fresh clients: each stream its own connection, as 16 users would have.
        clients = [httpx.AsyncClient(timeout=120) for _ in range(16)]
        try:
            await asyncio.gather(*(drop_after_first_token(c, real_server, i)
                                   for i, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.aclose()
        health = await engine_idle(real_server)
        assert health["running"] == 0 and health["waiting"] == 0, health
        after = statistics.median([await ttft(client, real_server) for _ in range(3)])
    # Had the 16 sequences (400 tokens each) kept decoding, a new request would wait for
    # their steps; an idle server answers as fast as before.
    assert after < max(3 * idle, idle + 0.3), (idle, after)


async def test_queue_overflow_gets_429_and_admitted_requests_finish() -> None:
    server = start_real_server("--max-num-seqs", "2", "--max-queue", "2")
    try:
        async with httpx.AsyncClient(timeout=180) as client:
            async def one(i: int) -> tuple[int, str | None, dict | None]:
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"Count {i}"}],
                        "max_tokens": 24, "ignore_eos": True}
                r = await client.post(f"{server.base_url}/chat/completions", json=body)
                return r.status_code, r.headers.get("retry-after"), r.json()

            results = await asyncio.gather(*(one(i) for i in range(10)))
    finally:
        stop_server(server)
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) >= 4 and statuses.count(429) >= 1, statuses
    for status, retry_after, body in results:
        assert body is not None
        if status == 429:
            assert retry_after is not None and int(retry_after) >= 1
            assert body["error"]["type"] == "rate_limit_error"
        else:
            assert status == 200
            assert body["choices"][0]["finish_reason"] == "length"
            assert body["usage"]["completion_tokens"] == 24
