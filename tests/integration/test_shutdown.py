"""SIGTERM during 8 running streams: they complete within the grace period, new requests get
503, the process exits 0, and the usage ledger holds every completed request."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from insieme.ledger import usage_totals
from tests.conftest import MODEL, Server, start_real_server

pytestmark = pytest.mark.model

STREAMS = 8
TOKENS = 32
GRACE = 120  # generous: a busy CI machine is slow, and only a hang should fail


def stream(server: Server, index: int, started: threading.Barrier) -> list[str]:
    body = {"model": MODEL, "stream": True, "max_tokens": TOKENS, "ignore_eos": True,
            "messages": [{"role": "user", "content": f"Tell story number {index}."}]}
    events = []
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                      timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 1:
                    started.wait(timeout=120)
    return events


def test_sigterm_lets_running_streams_finish(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.sqlite3"
    # One llama.cpp thread: its threads spin, and slow down many times over on a shared CPU.
    server = start_real_server("--threads", "1", "--max-num-seqs", "8",
                               "--shutdown-grace", str(GRACE),
                               "--usage-db", str(ledger))
    assert server.process is not None
    try:
        ok = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
            "model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200
        started = threading.Barrier(STREAMS + 1)
        with ThreadPoolExecutor(STREAMS) as pool:
            futures = [pool.submit(stream, server, i, started) for i in range(STREAMS)]
            started.wait(timeout=120)  # every stream has its first token
            server.process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            deadline = sent + 10
            while httpx.get(f"{server.root}/health").status_code == 200:
                assert time.monotonic() < deadline, "SIGTERM was not handled"
                time.sleep(0.02)
            refused = httpx.post(f"{server.base_url}/chat/completions", timeout=10, json={
                "model": MODEL, "messages": [{"role": "user", "content": "late"}]})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "shutting_down"
            assert refused.json()["error"]["type"] == "server_error"
            results = [f.result(timeout=GRACE) for f in futures]
        for events in results:
            assert events[-1] == "[DONE]"
            assert json.loads(events[-2])["usage"]["completion_tokens"] == TOKENS
        assert server.process.wait(timeout=GRACE) == 0
        assert time.monotonic() - sent < GRACE
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert "shutting down: 8 request(s) in flight" in server.log()
    totals = usage_totals(ledger)
    assert [t.requests for t in totals] == [STREAMS + 1]
    assert totals[0].completion_tokens == STREAMS * TOKENS + 2
