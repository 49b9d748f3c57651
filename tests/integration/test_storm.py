"""A disconnect storm on the real engine: hundreds of streams dropped at random points (while
the body is still arriving, while queued, during prefill, mid-stream), slow readers and
clients of non-streamed requests that stop waiting among them. Afterwards no sequence is
left in the engine, no running sequence holds KV cells, and a new request gets an idle
server's time to first token."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Server, read_metrics, start_real_server, stop_server

pytestmark = pytest.mark.model

STREAMS = 200
CONCURRENCY = 32
KINDS = ["half-body", "at-once", "prefill", "prefill", "mid-stream", "mid-stream", "slow",
         "complete", "json-leave"]
WORDS = ("river stone cloud lantern orchard velvet copper meadow signal harbor quartz ember "
         "violet canyon thistle marble").split()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # One llama.cpp thread: the storm's own client shares the CPU, and llama.cpp's spinning
    # threads slow down many times over when they cannot each have a core.
    srv = start_real_server("--threads", "1", "--max-num-seqs", "16", "--max-queue", "256")
    yield srv
    stop_server(srv)


def prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def request_bytes(body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


async def one_stream(port: int, kind: str, rng: random.Random) -> str:
    long = kind == "prefill"
    body = {"model": MODEL, "stream": kind != "json-leave", "temperature": 0.8,
            "ignore_eos": True,
            "max_tokens": 64 if kind == "slow" else rng.randint(8, 24),
            "messages": [{"role": "user", "content": prompt(rng, 60 if long else 6)}]}
    data = request_bytes(body)
    sock = socket.socket()
    if kind == "slow":  # a small receive window: the server's writes back up
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    rude = rng.random() < 0.5  # half the clients reset the connection, half close it
    try:
        if kind == "half-body":
            writer.write(data[: len(data) - rng.randint(1, 200)])
            await writer.drain()
            await asyncio.sleep(rng.uniform(0, 0.05))
            return kind
        writer.write(data)
        await writer.drain()
        if kind == "at-once":
            return kind
        if kind == "prefill":
            await asyncio.sleep(rng.uniform(0.0, 0.15))
            return kind
        if kind == "json-leave":  # a non-streamed request whose client stops waiting
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            return kind
        if kind == "slow":
            deadline = time.monotonic() + rng.uniform(0.5, 2.0)
            while time.monotonic() < deadline and await reader.read(256):
                await asyncio.sleep(0.05)
            return kind
        events = 0
        stop_after = rng.randint(1, 6) if kind == "mid-stream" else None
        async with asyncio.timeout(120):
            while line := await reader.readline():
                if line.startswith(b"data: [DONE]"):
                    return "done"
                if line.startswith(b"data: "):
                    events += 1
                    if events == stop_after:
                        return kind
        return "eof"
    finally:
        if rude:
            writer.transport.abort()
        else:
            writer.close()


async def storm(port: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def limited(kind: str, child: random.Random) -> str:
        async with gate:
            await asyncio.sleep(child.uniform(0, 0.02))
            return await one_stream(port, kind, child)

    kinds = [rng.choice(KINDS) for _ in range(STREAMS)]
    return await asyncio.gather(*(limited(k, random.Random(rng.random())) for k in kinds))


def ttft(server: Server, text: str) -> float:
    body = {"model": MODEL, "stream": True, "max_tokens": 2,
            "messages": [{"role": "user", "content": text}]}
    started = time.perf_counter()
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                      timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                return time.perf_counter() - started
    raise AssertionError("no token")


def idle_ttft(server: Server, tag: str) -> float:
    # Fresh prompts each time, so the prefix cache does not flatter either side.
    return statistics.median(ttft(server, f"{tag} {i}: name a colour.") for i in range(5))


def engine_idle(server: Server) -> dict[str, float]:
    deadline = time.monotonic() + 30
    while True:
        metrics = read_metrics(server.root)
        held = {name: metrics[f"insieme:{name}"] for name in (
            "num_requests_running", "num_requests_waiting", "kv_cache_sequences",
            "engine_open_requests")}
        if not any(held.values()) or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


def test_disconnect_storm_leaves_nothing_behind(server: Server) -> None:
    ttft(server, "warm up")
    before = idle_ttft(server, "before")
    port = int(server.root.rsplit(":", 1)[1])
    started = time.monotonic()
    outcomes = asyncio.run(storm(port, seed=20240601))
    took = time.monotonic() - started
    assert outcomes.count("done") > 10, outcomes  # the complete ones did complete
    assert "eof" not in outcomes  # no stream was cut by the server

    assert engine_idle(server) == {"num_requests_running": 0, "num_requests_waiting": 0,
                                   "kv_cache_sequences": 0, "engine_open_requests": 0}
    health = httpx.get(f"{server.root}/health").json()
    assert health["running"] == health["waiting"] == health["kv_sequences"] == 0
    after = idle_ttft(server, "after")
    assert after < max(2 * before, before + 0.1), (before, after)
    metrics = read_metrics(server.root)
    assert metrics.get("insieme:request_errors_total{status=500}", 0) == 0
    log = "".join(server.output)
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert metrics["insieme:request_success_total{finished_reason=abort}"] > STREAMS / 4
    print(f"storm of {STREAMS} streams in {took:.1f} s; idle TTFT {before * 1000:.0f} ms "
          f"before, {after * 1000:.0f} ms after")
