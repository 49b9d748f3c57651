"""Replicas that follow the load: a second one added while requests queue, round robin across
both once it is up, and back to one when the load is gone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL, Server, start_real_server, stop_server
from tests.engine.ray.cluster import LocalCluster, require_ray
from tests.engine.ray.test_api import replicas, served_after

require_ray()
pytestmark = pytest.mark.model


def ready(server: Server) -> list[dict[str, Any]]:
    return [r for r in replicas(server).values() if r["state"] == "ready"]


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_replicas_follow_the_load(ray_cluster: LocalCluster) -> None:
    # No CPU reserved: the session's other replicas hold the cluster's CPUs.
    server = start_real_server(
        "--ray-address", ray_cluster.address, "--ray-app-name", "autoscaled",
        "--min-replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "1",
        "--upscale-delay", "1", "--downscale-delay", "3", "--ray-router", "round-robin",
        "--threads", "1", "--replica-cpus", "0", "--max-num-seqs", "4", "--no-usage-db",
        timeout=240.0)
    try:
        assert wait_for(lambda: len(ready(server)) == 1, 10), replicas(server)
        statuses: list[int] = []
        loaded = threading.Event()

        def keep_asking(i: int) -> None:
            while not loaded.is_set():
                reply = httpx.post(f"{server.base_url}/chat/completions", timeout=120, json={
                    "model": MODEL, "max_tokens": 48, "ignore_eos": True,
                    "messages": [{"role": "user", "content": f"Count to {i}."}]})
                statuses.append(reply.status_code)

        # Four requests at a time on a replica meant for one: Serve adds the second.
        with ThreadPoolExecutor(4) as pool:
            for i in range(4):
                pool.submit(keep_asking, i)
            try:
                scaled = wait_for(lambda: len(ready(server)) == 2, 120)
            finally:
                loaded.set()
        assert scaled, replicas(server)
        assert statuses and set(statuses) == {200}, statuses

        # Both up: round robin gives each of them every other request.
        before = {name: r["served"] for name, r in replicas(server).items()}
        for i in range(4):
            reply = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
                "model": MODEL, "max_tokens": 4,
                "messages": [{"role": "user", "content": f"Hello {i}"}]})
            assert reply.status_code == 200
        served = served_after(server, before, 4)
        assert sorted(served.values()) == [2, 2], served

        # Idle: back to the minimum, and the replica removed leaves /health.
        assert wait_for(lambda: len(replicas(server)) == 1, 120), replicas(server)
        assert len(ready(server)) == 1
        reply = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
            "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.status_code == 200
    finally:
        stop_server(server)
