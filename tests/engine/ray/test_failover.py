"""A replica's process dies under load: no non-streamed request is lost (they run again on
the other replica), the streams it was serving end with an error event within seconds, the
other replica keeps serving, and Serve brings up a replacement."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import MODEL, Server
from tests.engine.ray.cluster import require_ray
from tests.engine.ray.test_api import replicas

require_ray()
pytestmark = pytest.mark.model


@dataclass
class StreamEnd:
    started: float  # when its first token arrived
    ended: float
    error: dict[str, object] | None  # the error event, if it ended with one
    finish_reason: str | None


def chat(content: str, max_tokens: int, *, stream: bool) -> dict[str, object]:
    return {"model": MODEL, "stream": stream, "max_tokens": max_tokens, "ignore_eos": True,
            "messages": [{"role": "user", "content": content}]}


def read_stream(server: Server, content: str, first_token: threading.Event) -> StreamEnd:
    started, error, finish_reason = 0.0, None, None
    with httpx.stream("POST", f"{server.base_url}/chat/completions", timeout=120,
                      json=chat(content, 400, stream=True)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                error = event
            elif event["choices"] and event["choices"][0].get("finish_reason"):
                finish_reason = event["choices"][0]["finish_reason"]
            elif not started:
                started = time.monotonic()
                first_token.set()
    return StreamEnd(started, time.monotonic(), error, finish_reason)


def running_total(server: Server) -> int:
    return sum(r["running"] for r in replicas(server).values() if r["state"] == "ready")


def test_a_replica_dies_under_load(ray_server: Server) -> None:
    before = replicas(ray_server)
    assert len(before) == 2
    with ThreadPoolExecutor(20) as pool:
        streams: list[Future[StreamEnd]] = []
        for i in range(4):
            first = threading.Event()
            streams.append(pool.submit(read_stream, ray_server,
                                       f"Story {i}: tell me a long tale about a {i}-eyed cat.",
                                       first))
            assert first.wait(60)
        deadline = time.monotonic() + 10
        while running_total(ray_server) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        # The replica with the most streams running dies; the other one may have none.
        victim = max(replicas(ray_server).values(), key=lambda r: r["running"])
        assert victim["running"] > 0
        plain = [pool.submit(httpx.post, f"{ray_server.base_url}/chat/completions", timeout=120,
                             json=chat(f"Question {i}: what is {i} times {i}?", 48,
                                       stream=False))
                 for i in range(10)]
        time.sleep(1.0)  # some of them are now generating on the victim
        killed = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)

        answers = [future.result() for future in plain]
        ends = [future.result() for future in streams]

    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    assert all(a.json()["usage"]["completion_tokens"] == 48 for a in answers)
    failed = [end for end in ends if end.error is not None]
    assert failed, "the victim was serving streams: they must end with an error event"
    for end in failed:
        assert end.ended - killed < 5.0
        assert end.error is not None and {"message", "type", "code"} <= set(end.error["error"])
    assert all(end.finish_reason == "length" for end in ends if end.error is None)

    # The survivor serves on its own, at once.
    reply = httpx.post(f"{ray_server.base_url}/chat/completions", timeout=30,
                       json=chat("Still there?", 8, stream=False))
    assert reply.status_code == 200

    # Serve replaces the dead replica; /health shows it dead until then, then two again.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        now = replicas(ray_server)
        ready = [name for name, r in now.items() if r["state"] == "ready"]
        if len(ready) == 2 and victim["replica"] not in ready:
            break
        time.sleep(1.0)
    else:
        pytest.fail(f"no replacement replica within 150 s: {replicas(ray_server)}")
    assert set(ready) - set(before), "a new replica took the dead one's place"
