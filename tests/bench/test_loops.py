"""The open loop, multi-turn conversations and per-request datasets, against a scripted
server (httpx's MockTransport): what reaches the server, and when."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from insieme.bench.datasets import build_workload, random_prompts
from insieme.bench.loops import run_level
from insieme.bench.runner import run_bench
from insieme.bench.schedule import arrival_times
from insieme.bench.settings import BenchSettings

SSE = {"content-type": "text/event-stream"}


class Server:
    """Answers each chat with ``answer N`` (N counts the chat requests, the warm-up is 0)
    after ``hold`` seconds, ``one_at_a_time`` if asked; records when each request came,
    what it asked, and how many were in flight."""

    def __init__(self, hold: float = 0.0, one_at_a_time: bool = False,
                 fail: frozenset[int] = frozenset()) -> None:
        self.hold = hold
        self.lock = asyncio.Lock() if one_at_a_time else None
        self.fail = fail
        self.received: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[str] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
        self.received.append(time.perf_counter())
        self.bodies.append(json.loads(request.content))
        number = len(self.answers)
        self.answers.append(f"answer {number}")
        if number in self.fail:
            return httpx.Response(500, json={"error": {"message": "scripted failure"}})
        return httpx.Response(200, headers=SSE, content=self._stream(number))

    async def _stream(self, number: int) -> AsyncIterator[bytes]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.lock is not None:
                async with self.lock:
                    await asyncio.sleep(self.hold)
            else:
                await asyncio.sleep(self.hold)
            for piece in ("answer", f" {number}"):
                delta = {"choices": [{"delta": {"content": piece}}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
            yield b"data: [DONE]\n\n"
        finally:
            self.in_flight -= 1

    def level_times(self) -> list[float]:
        """When each request after the warm-up came, from the first of them."""
        times = self.received[1:]
        return [t - times[0] for t in times]


def settings(**changes: Any) -> BenchSettings:
    fields: dict[str, Any] = {"base_url": "http://server.test/v1", "model": "m",
                              "max_tokens": 3, **changes}
    return BenchSettings(**fields)


def run(server: Server, **changes: Any) -> dict[str, Any]:
    return run_bench(settings(**changes), transport=httpx.MockTransport(server))


def test_open_loop_sends_at_the_configured_rate() -> None:
    rate, requests = 200.0, 300
    server = Server()
    results = run(server, request_rate=(rate,), requests=requests)
    assert results["levels"][0]["completed"] == requests
    sent = server.level_times()
    due = arrival_times(requests, rate, seed=0)
    mean_gap = sent[-1] / (requests - 1)
    assert mean_gap == pytest.approx(1 / rate, rel=0.15)
    assert mean_gap == pytest.approx(due[-1] / (requests - 1), rel=0.05)
    # Each request goes when it is due (from the level's start), never early and rarely late.
    lags = sorted(s - d for s, d in zip(sent, due, strict=True))
    assert lags[0] > -0.005
    assert lags[len(lags) // 2] < 0.01 and lags[int(len(lags) * 0.95)] < 0.05


def test_arrivals_do_not_wait_for_completions() -> None:
    # Each answer takes a second; 20 requests at 100/s are all sent long before the first
    # one is answered, as open loop must.
    server = Server(hold=1.0)
    results = run(server, request_rate=(100.0,), requests=20)
    assert server.level_times()[-1] < 0.8
    assert server.peak == 20
    level = results["levels"][0]
    assert level["completed"] == 20 and level["ttft_ms"]["p50"] >= 1000


def test_a_server_slower_than_the_rate_builds_a_queue() -> None:
    # One request at a time, 20 ms each: a closed loop of one never waits, but 20 arrivals
    # at once wait for each other, and their TTFT shows it.
    closed = run(Server(hold=0.02, one_at_a_time=True), concurrency=(1,), requests=20)
    opened = run(Server(hold=0.02, one_at_a_time=True), request_rate=(math.inf,), requests=20)
    assert closed["levels"][0]["ttft_ms"]["p99"] < 100
    assert opened["levels"][0]["ttft_ms"]["p99"] > 300
    assert opened["levels"][0]["concurrency"] is None


def test_max_concurrency_caps_requests_in_flight() -> None:
    server = Server(hold=0.03)
    results = run(server, request_rate=(math.inf,), max_concurrency=4, requests=24)
    assert server.peak == 4
    assert results["levels"][0]["completed"] == 24
    assert results["levels"][0]["concurrency"] == 4
    uncapped = Server(hold=0.03)
    run(uncapped, request_rate=(math.inf,), requests=24)
    assert uncapped.peak == 24


@pytest.mark.parametrize("load", [{"concurrency": (2,)}, {"request_rate": (math.inf,)}])
def test_multi_turn_requests_carry_the_earlier_answers(load: dict[str, Any]) -> None:
    server = Server()
    results = run(server, dataset="multi-turn", turns=3, requests=6, **load)
    assert results["levels"][0]["completed"] == 6
    asked = server.bodies[1:]
    answered = server.answers[1:]
    # Each later turn is an earlier request's whole chat, then the answer the server gave it.
    for body in asked:
        messages = body["messages"]
        previous = messages[:-2]
        assert messages[-1]["role"] == "user"
        if len(messages) == 2:
            continue
        assert any(previous == earlier["messages"] and messages[-2] ==
                   {"role": "assistant", "content": answer}
                   for earlier, answer in zip(asked, answered, strict=True))
    turns = sorted(sum(m["role"] == "assistant" for m in body["messages"]) for body in asked)
    assert turns == [0, 0, 1, 1, 2, 2]
    assert all(body["messages"][0]["role"] == "system" for body in asked)


def test_a_failed_turn_ends_its_conversation() -> None:
    server = Server(fail=frozenset({1}))  # the first turn of the first conversation
    results = run(server, dataset="multi-turn", turns=2, requests=4, concurrency=(1,))
    level = results["levels"][0]
    assert level["errors"] == {"500": 1, "previous_turn_failed": 1}
    assert level["completed"] == 2
    assert len(server.bodies) == 1 + 3  # the warm-up, then one turn never sent


def test_random_requests_send_their_own_lengths_with_ignore_eos() -> None:
    server = Server()
    run(server, dataset="random", random_input_len=40, random_output_len=9,
        random_range_ratio=0.5, seed=4, concurrency=(2,), requests=10)
    expected = random_prompts(10, 40, 9, 0.5, seed=4)
    bodies = server.bodies[1:]
    assert sorted(b["max_tokens"] for b in bodies) == sorted(p.max_tokens or 0 for p in expected)
    assert sorted(b["messages"][0]["content"] for b in bodies) == sorted(
        p.messages[0]["content"] for p in expected)
    assert all(b["ignore_eos"] is True for b in bodies)


def test_grounded_requests_send_their_own_max_tokens_without_ignore_eos() -> None:
    server = Server()
    run(server, dataset="grounded", concurrency=(2,), requests=8)
    bodies = server.bodies[1:]
    assert len({b["max_tokens"] for b in bodies}) > 1
    assert all("ignore_eos" not in b and b["max_tokens"] > 3 for b in bodies)


def test_results_record_what_makes_the_run_again() -> None:
    results = run(Server(), request_rate=(50.0, math.inf), requests=6, seed=3,
                  dataset="random", random_input_len=10, random_output_len=4,
                  slo_ttft_ms=500.0)
    stored = results["settings"]
    assert stored["arrivals"] == "poisson" and stored["concurrency"] is None
    assert stored["request_rate"] == [50.0, "inf"] and stored["seed"] == 3
    assert stored["dataset"] == "random"
    assert stored["dataset_params"] == {"input_len": 10, "output_len": 4, "range_ratio": 0.0}
    assert stored["slo_ttft_ms"] == 500.0 and stored["slo_tpot_ms"] is None
    assert [level["request_rate"] for level in results["levels"]] == [50.0, "inf"]
    assert all(level["goodput"] is not None for level in results["levels"])
    json.dumps(results, allow_nan=False)  # strict JSON: no Infinity


async def test_each_record_says_when_it_was_sent() -> None:
    s = settings(request_rate=(100.0,), requests=20)
    async with httpx.AsyncClient(transport=httpx.MockTransport(Server())) as client:
        records, duration = await run_level(client, s, s.levels[0], build_workload(s))
    sent = sorted(r.sent_at for r in records if r.sent_at is not None)
    due = arrival_times(20, 100.0)
    assert len(sent) == 20 and duration >= sent[-1]
    assert all(-0.001 < s - d < 0.05 for s, d in zip(sent, due, strict=True))
