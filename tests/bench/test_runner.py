"""The closed loop and its checks, against a scripted server (MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from rich.console import Console

from insieme.bench.client import BenchError
from insieme.bench.report import print_report
from insieme.bench.runner import run_bench
from insieme.bench.settings import BenchSettings, Level

SSE = {"content-type": "text/event-stream"}


class ScriptedServer:
    """Streams three content chunks per request, never usage; records concurrency."""

    def __init__(self, chat_status: int = 200, models: list[str] | None = None,
                 owned_by: str | None = None) -> None:
        self.chat_status = chat_status
        self.owned_by = owned_by
        self.models = models if models is not None else ["m"]
        self.in_flight = 0
        self.peak: dict[int, int] = {}
        self.level = 0
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            cards = [{"id": m, "owned_by": self.owned_by} for m in self.models]
            return httpx.Response(200, json={"object": "list", "data": cards})
        self.bodies.append(json.loads(request.content))
        if self.chat_status != 200:
            return httpx.Response(self.chat_status, json={"error": {"message": "nope"}})
        return httpx.Response(200, headers=SSE, content=self._stream())

    async def _stream(self) -> AsyncIterator[bytes]:
        self.in_flight += 1
        self.peak[self.level] = max(self.peak.get(self.level, 0), self.in_flight)
        try:
            for piece in ("a", "b", "c"):
                await asyncio.sleep(0.002)
                yield f'data: {{"choices": [{{"delta": {{"content": "{piece}"}}}}]}}\n\n'.encode()
            yield b"data: [DONE]\n\n"
        finally:
            self.in_flight -= 1


class LevelWatcher:
    """A progress sink that tells the server which level is running."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.done: list[int] = []

    def level_started(self, level: Level, requests: int) -> None:
        self.server.level = level.concurrency or 0

    def request_done(self, record: Any) -> None:
        self.done.append(self.server.level)

    def level_done(self, metrics: Any) -> None:
        pass


def settings(**changes: Any) -> BenchSettings:
    fields: dict[str, Any] = {"base_url": "http://server.test/v1", "model": "m",
                              "concurrency": (1, 3), "requests": 6, "max_tokens": 3, **changes}
    return BenchSettings(**fields)


def test_closed_loop_keeps_exactly_n_clients_busy() -> None:
    server = ScriptedServer()
    watcher = LevelWatcher(server)
    results = run_bench(settings(), progress=watcher, transport=httpx.MockTransport(server))
    assert server.peak == {0: 1, 1: 1, 3: 3}  # level 0 is the warm-up request
    assert watcher.done == [1] * 6 + [3] * 6
    assert [level["completed"] for level in results["levels"]] == [6, 6]
    assert len(server.bodies) == 1 + 12
    assert server.bodies[0]["max_tokens"] <= 4  # the warm-up is short


def test_a_server_without_usage_is_counted_by_chunks_and_says_so() -> None:
    results = run_bench(settings(), transport=httpx.MockTransport(ScriptedServer()))
    assert results["output_tokens_source"] == "chunks"
    assert all(level["total_output_tokens"] == 6 * 3 for level in results["levels"])
    assert results["server"]["label"] == "server.test"  # no owned_by: host and port
    console = Console(record=True, width=160)
    print_report(results, console)
    assert "counted as content chunks" in console.export_text()


@pytest.mark.parametrize(("owned_by", "label"), [("vllm", "vllm"), ("me", "server.test")])
def test_default_label_is_the_owner_unless_it_names_nobody(owned_by: str, label: str) -> None:
    server = ScriptedServer(owned_by=owned_by)
    results = run_bench(settings(), transport=httpx.MockTransport(server))
    assert results["server"]["label"] == label
    assert run_bench(settings(label="mine"), transport=httpx.MockTransport(server))[
        "server"]["label"] == "mine"


def test_results_never_hold_the_api_key() -> None:
    results = run_bench(settings(api_key="secret-key"),
                        transport=httpx.MockTransport(ScriptedServer()))
    assert "secret-key" not in json.dumps(results)


@pytest.mark.parametrize(("status", "models", "message"), [
    (404, ["other"], "does not serve the model 'm'; it serves: other"),
    (404, ["m"], "answered HTTP 404: nope .*end in /v1"),
    (401, ["m"], "needs an API key"),
    (500, ["m"], r"first request .* failed \(HTTP 500\): nope"),
])
def test_the_warm_up_turns_failures_into_one_line(status: int, models: list[str],
                                                  message: str) -> None:
    server = ScriptedServer(chat_status=status, models=models)
    with pytest.raises(BenchError, match=message):
        run_bench(settings(), transport=httpx.MockTransport(server))
    assert len(server.bodies) == 1  # stopped before the first level
