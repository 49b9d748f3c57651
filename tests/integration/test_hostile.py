"""Hostile input against the real engine (issue 13): a request the engine could never run is
refused instead of stalling the queue, the engine thread sleeps when nothing can run, a model
that does not load stops the server with the reason, an engine that dies turns into 503s
with the reason instead of hung requests, and the worst requests the limits allow still
leave everyone else's greedy output as it is."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from insieme.config import EngineConfig, bundled_model_path
from insieme.engine.llama.engine import LlamaEngine
from insieme.engine.types import GenerationRequest, SamplingParams
from tests.conftest import MODEL, Server, free_port, start_real_server, stop_server

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_real_server("--threads", "1", "--max-num-seqs", "4",
                            env={"INSIEME_FAULT_INJECTION": "1"})
    yield srv
    stop_server(srv)


async def _chat(client: httpx.AsyncClient, base_url: str, **fields: object) -> httpx.Response:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0, **fields}
    return await client.post(f"{base_url}/chat/completions", json=body)


def test_n_above_max_num_seqs_is_refused_and_stalls_nobody(server: Server) -> None:
    """Before: n=5 on 4 slots never fitted, and everything queued behind it waited forever."""
    async def run() -> tuple[httpx.Response, list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=60) as client:
            big = await _chat(client, server.base_url, n=5)
            others = await asyncio.gather(*(_chat(client, server.base_url) for _ in range(6)))
            return big, list(others)

    big, others = asyncio.run(run())
    assert big.status_code == 400, big.text
    error = big.json()["error"]
    assert error["param"] == "n" and error["code"] == "n_too_large"
    assert [r.status_code for r in others] == [200] * 6
    assert len({r.json()["choices"][0]["message"]["content"] for r in others}) == 1


def test_the_engine_thread_sleeps_when_nothing_can_run() -> None:
    """A queue head that cannot be admitted (here put straight into the core, past the
    API's check) used to make the engine loop spin a core; it now waits for a message."""
    async def run() -> float:
        config = EngineConfig(model_path=str(bundled_model_path()), max_model_len=256,
                              max_num_seqs=2, n_threads=1)
        engine = LlamaEngine(config)
        await engine.start()
        await engine.wait_ready()
        core = engine._core
        assert core is not None
        try:
            stuck = GenerationRequest("stuck", [1, 2, 3], SamplingParams(max_tokens=2), n=3)
            core.add(stuck)
            await asyncio.sleep(0.3)
            assert core.scheduler.num_waiting == 1
            started = time.process_time()
            await asyncio.sleep(1.0)
            return time.process_time() - started
        finally:
            core.abort("stuck")
            await engine.stop()

    cpu_seconds = asyncio.run(run())
    assert cpu_seconds < 0.3, f"the engine used {cpu_seconds:.2f} s of CPU in 1 s while idle"


def test_a_model_that_does_not_load_stops_the_server(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    port = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "insieme", "serve", "--port", str(port), "--model", str(corrupt),
         "--no-usage-db"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "could not load" in done.stderr and str(corrupt) in done.stderr
    assert time.monotonic() - started < 60


def test_an_engine_that_dies_fails_fast_with_its_reason() -> None:
    """The engine thread dies mid-stream (a fatal injected fault, which escapes every
    per-request guard): the stream ends with an error event, /health turns 503 with the
    reason, and new requests get that 503 at once instead of hanging."""
    srv = start_real_server("--threads", "1", env={"INSIEME_FAULT_INJECTION": "1"})
    try:
        body = {"model": MODEL, "messages": QUESTION, "max_tokens": 32, "stream": True,
                "ignore_eos": True}
        with httpx.stream("POST", f"{srv.base_url}/chat/completions", json=body, timeout=30,
                          headers={"X-Insieme-Fault": "engine:3"}) as response:
            assert response.status_code == 200
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        last = json.loads(events[-1])
        assert "error" in last and "injected fatal fault" in last["error"]["message"]
        health = httpx.get(f"{srv.root}/health", timeout=5)
        assert health.status_code == 503
        assert health.json()["error"]["code"] == "engine_failed"
        assert "injected fatal fault" in health.json()["error"]["message"]
        started = time.monotonic()
        refused = httpx.post(f"{srv.base_url}/chat/completions", timeout=10,
                             json={"model": MODEL, "messages": QUESTION, "max_tokens": 4})
        assert refused.status_code == 503 and time.monotonic() - started < 5
        assert refused.json()["error"]["code"] == "engine_failed"
    finally:
        stop_server(srv)
