"""Graceful shutdown on the fake engine: stop admitting (503), let running streams finish
within the grace period, end the rest with an error event, then stop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from insieme.api.app import create_app
from insieme.api.lifecycle import GracefulServer
from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from insieme.ledger import usage_totals
from tests.api.test_errors import check_error
from tests.conftest import MODEL, free_port, wait_healthy

REPLY = " ".join(f"w{i}" for i in range(20))  # 20 tokens, 1 s at 50 ms each


@contextmanager
def graceful(config: ServerConfig) -> Iterator[tuple[str, GracefulServer]]:
    port = free_port()
    app = create_app(FakeEngine(REPLY, token_delay=0.05), config)
    server = GracefulServer(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"),
                            app.ctx.lifecycle, config.shutdown_grace)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    root = f"http://127.0.0.1:{port}"
    wait_healthy(root)
    try:
        yield root, server
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive()


def stream(root: str) -> list[str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{root}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def start_streams(root: str, count: int) -> tuple[ThreadPoolExecutor, list]:  # type: ignore[type-arg]
    pool = ThreadPoolExecutor(count + 1)
    futures = [pool.submit(stream, root) for _ in range(count)]
    deadline = time.monotonic() + 10
    while httpx.get(f"{root}/health").json()["running"] < count:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return pool, futures


def test_running_streams_finish_and_new_requests_get_503(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.sqlite3"
    config = ServerConfig(shutdown_grace=10, usage_db=str(ledger))
    with graceful(config) as (root, server):
        pool, futures = start_streams(root, 4)
        started = time.monotonic()
        server.request_shutdown()
        time.sleep(0.1)
        refused = httpx.post(f"{root}/v1/chat/completions",
                             json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert check_error(refused, 503, None)["code"] == "shutting_down"
        assert httpx.get(f"{root}/health").status_code == 503
        for future in futures:
            events = future.result(timeout=10)
            assert events[-1] == "[DONE]"
            assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
        pool.shutdown()
        deadline = time.monotonic() + 5
        while not server.should_exit:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert time.monotonic() - started < 5
    assert [t.requests for t in usage_totals(ledger)] == [4]


def test_requests_past_the_grace_end_with_an_error(tmp_path: Path) -> None:
    with graceful(ServerConfig(shutdown_grace=0.3)) as (root, server):
        pool, futures = start_streams(root, 3)
        waiting = pool.submit(httpx.post, f"{root}/v1/chat/completions", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        time.sleep(0.1)
        server.request_shutdown()
        # A client still waiting for a JSON body gets the error's own status.
        assert check_error(waiting.result(timeout=10), 503, None)["code"] == "shutting_down"
        for future in futures:
            events = future.result(timeout=10)
            error = json.loads(events[-1])["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert "shutting down" in error["message"]
            assert len(events) < 20  # cut short
        pool.shutdown()
        deadline = time.monotonic() + 8
        while not server.should_exit:
            assert time.monotonic() < deadline
            time.sleep(0.02)
