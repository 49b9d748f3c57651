"""Soak: a few thousand requests of mixed kinds against `insieme serve`, watching its memory.

Streamed and not, chat and legacy completions, n=2, stop strings, include_usage, clients that
leave mid-stream or before the first token, and requests that fail validation. The server's
resident set (RSS) is read after a warm-up and again at the end; it passes when the end is
within 10% of the warm-up.

    python benchmarks/soak.py [--requests 3000] [--concurrency 16] [--warmup 300]
                              [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TOPICS = ("a lighthouse", "the sea", "a fox", "bread", "rain", "a violin", "mountains", "tea",
          "a train", "the moon", "gardens", "a clock")
KINDS = ("chat", "chat-stream", "chat-usage", "chat-n2", "chat-stop", "completion",
         "completion-stream", "leave-mid-stream", "leave-early", "bad-request")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def body_for(kind: str, rng: random.Random) -> tuple[str, dict[str, object]]:
    topic = rng.choice(TOPICS)
    messages = [{"role": "user", "content": f"Tell me about {topic} #{rng.randint(0, 999)}."}]
    base: dict[str, object] = {"model": MODEL, "max_tokens": rng.randint(4, 24)}
    if kind.startswith("completion"):
        return "completions", {**base, "prompt": f"Once upon a time, {topic}",
                               "stream": kind.endswith("stream")}
    if kind == "bad-request":
        return "chat/completions", {**base, "messages": messages, "temperature": "hot"}
    body = {**base, "messages": messages}
    if kind in ("chat-stream", "leave-mid-stream", "leave-early", "chat-usage"):
        body["stream"] = True
    if kind == "chat-usage":
        body["stream_options"] = {"include_usage": True}
    if kind == "chat-n2":
        body["n"] = 2
    if kind == "chat-stop":
        body["stop"] = [".", "\n"]
    return "chat/completions", body


async def one(client: httpx.AsyncClient, base_url: str, kind: str, rng: random.Random) -> str:
    route, body = body_for(kind, rng)
    url = f"{base_url}/{route}"
    if not body.get("stream"):
        response = await client.post(url, json=body)
        return str(response.status_code)
    async with client.stream("POST", url, json=body) as response:
        if kind == "leave-early":
            return "left"
        events = 0
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events += 1
                if kind == "leave-mid-stream" and events == 2:
                    return "left"
                if line == "data: [DONE]":
                    return str(response.status_code)
    return "cut"


async def run(base_url: str, count: int, concurrency: int, seed: int,
              on_done: list[int]) -> Counter[str]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency * 2)

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def task(kind: str, child: random.Random) -> None:
            async with gate:
                try:
                    outcomes[await one(client, base_url, kind, child)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                on_done[0] += 1

        await asyncio.gather(*(task(rng.choice(KINDS), random.Random(rng.random()))
                               for _ in range(count)))
    return outcomes


def wait_healthy(root: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("insieme serve exited")
        try:
            if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("insieme serve did not become healthy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args()

    port = free_port()
    root = f"http://127.0.0.1:{port}"
    ledger = Path(tempfile.mkdtemp()) / "usage.sqlite3"
    cmd = [sys.executable, "-m", "insieme", "serve", "--port", str(port),
           "--max-model-len", "1024", "--usage-db", str(ledger), "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(root, server)
        done = [0]
        samples: list[tuple[int, float]] = []

        def sample() -> None:
            while server.poll() is None and done[0] < args.warmup + args.requests:
                samples.append((done[0], rss_mib(server.pid)))
                time.sleep(1)

        started = time.monotonic()
        warm = asyncio.run(run(f"{root}/v1", args.warmup, args.concurrency, args.seed, done))
        time.sleep(1)
        rss_warm = rss_mib(server.pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        soak_started = time.monotonic()
        outcomes = asyncio.run(run(f"{root}/v1", args.requests, args.concurrency,
                                   args.seed + 1, done))
        soak_seconds = time.monotonic() - soak_started
        time.sleep(1)
        rss_end = rss_mib(server.pid)
        health = httpx.get(f"{root}/health").json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    growth = (rss_end - rss_warm) / rss_warm
    summary = {
        "requests": args.requests, "warmup": args.warmup, "concurrency": args.concurrency,
        "threads": args.threads or os.cpu_count(), "soak_seconds": round(soak_seconds, 1),
        "requests_per_second": round(args.requests / soak_seconds, 1),
        "rss_after_warmup_mib": round(rss_warm, 1), "rss_end_mib": round(rss_end, 1),
        "rss_peak_mib": round(max([rss_warm, rss_end, *(r for _, r in samples)]), 1),
        "rss_growth": round(growth, 4), "within_10_percent": abs(growth) <= 0.10,
        "outcomes": dict(outcomes), "warmup_outcomes": dict(warm),
        "engine_after": {k: health[k] for k in ("running", "waiting")},
        "total_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "rss_samples": samples}, indent=2))
    return 0 if summary["within_10_percent"] else 1


if __name__ == "__main__":
    sys.exit(main())
