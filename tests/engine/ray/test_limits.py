"""Every replica full, and the queue in front of them too: 429 with Retry-After, and the
server goes on serving."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import MODEL, start_real_server, stop_server
from tests.engine.ray.cluster import LocalCluster, require_ray

require_ray()
pytestmark = pytest.mark.model


def test_full_replicas_answer_429_with_retry_after(ray_cluster: LocalCluster) -> None:
    # One replica that runs one request and queues none, one more may wait in front of it.
    # No CPU reserved: the session's other replicas hold the cluster's CPUs.
    server = start_real_server(
        "--ray-address", ray_cluster.address, "--ray-app-name", "tight", "--replicas", "1",
        "--threads", "1", "--replica-cpus", "0", "--max-num-seqs", "1", "--max-queue", "0",
        "--ray-max-queued", "1", "--no-usage-db", timeout=240.0)
    try:
        def ask(i: int) -> httpx.Response:
            return httpx.post(f"{server.base_url}/chat/completions", timeout=120, json={
                "model": MODEL, "max_tokens": 48, "ignore_eos": True,
                "messages": [{"role": "user", "content": f"Hello {i}"}]})

        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(ask, range(6)))
        statuses = sorted(reply.status_code for reply in replies)
        assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, statuses
        for reply in replies:
            if reply.status_code == 429:
                assert reply.headers["retry-after"] == "1"
                assert reply.json()["error"]["code"] == "queue_full"
        assert ask(99).status_code == 200  # and afterwards it serves again
    finally:
        stop_server(server)
