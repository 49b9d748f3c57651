"""The insieme API in front of two engine replicas on a two-node Ray cluster: what a client
sees is the same server, whichever replica answers."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODEL, Server, read_metrics
from tests.engine.ray.cluster import require_ray
from tests.integration.test_seed import PYTHON_SNIPPET, env_for

require_ray()
pytestmark = pytest.mark.model


def replicas(server: Server) -> dict[str, dict[str, Any]]:
    health = httpx.get(f"{server.root}/health", timeout=10).json()
    return {replica["replica"]: replica for replica in health["replicas"]}


def served_after(server: Server, before: dict[str, int], total: int) -> dict[str, int]:
    """Requests each replica took since ``before``, once they add up to ``total`` (the
    replicas post their counts every second)."""
    deadline = time.monotonic() + 10
    while True:
        now = {name: r["served"] - before.get(name, 0) for name, r in replicas(server).items()}
        if sum(now.values()) >= total or time.monotonic() > deadline:
            return now
        time.sleep(0.3)


def test_health_lists_one_ready_replica_per_node(ray_server: Server) -> None:
    found = replicas(ray_server).values()
    assert sorted(r["node"] for r in found) == ["127.0.0.2", "127.0.0.3"]
    assert all(r["state"] == "ready" for r in found)


def test_the_seed_snippet(ray_server: Server) -> None:
    result = subprocess.run([sys.executable, "-c", PYTHON_SNIPPET], env=env_for(ray_server),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) >= 5


def test_openai_sdk_streamed_and_not(ray_server: Server) -> None:
    client = openai.OpenAI(base_url=ray_server.base_url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Name three colours."}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12,
                                           temperature=0)
    assert plain.choices[0].message.content
    assert plain.usage is not None and plain.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12,
                                                 temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content  # greedy: same text either way
    completion = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=5)
    assert completion.choices[0].text


def test_concurrent_requests_use_both_replicas(ray_server: Server) -> None:
    before = {name: r["served"] for name, r in replicas(ray_server).items()}
    client = openai.OpenAI(base_url=ray_server.base_url, api_key="unused", max_retries=0)

    def ask(i: int) -> str:
        reply = client.chat.completions.create(
            model=MODEL, max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": f"Question {i}: name an animal of {i} legs."}])
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(12)))
    assert all(answers)
    served = served_after(ray_server, before, 12)
    assert sum(served.values()) >= 12  # the counts posted before may lag by a request
    assert all(count > 0 for count in served.values()), served


def test_a_conversation_stays_on_its_replica(ray_server: Server) -> None:
    client = openai.OpenAI(base_url=ray_server.base_url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "My name is Ada and I keep bees in the hills. "
                 "Tell me one thing about bees."}]
    before = {name: r["served"] for name, r in replicas(ray_server).items()}
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24,
                                           temperature=0)
    first_on = served_after(ray_server, before, 1)
    messages += [{"role": "assistant", "content": first.choices[0].message.content or ""},
                 {"role": "user", "content": "And one more thing, please."}]
    before = {name: r["served"] for name, r in replicas(ray_server).items()}
    second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24,
                                            temperature=0)
    second_on = served_after(ray_server, before, 1)
    assert [n for n, c in first_on.items() if c] == [n for n, c in second_on.items() if c]
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    # The whole first prompt was already in that replica's cache.
    assert details is not None and details.cached_tokens >= first.usage.prompt_tokens


def test_metrics_carry_each_replica(ray_server: Server) -> None:
    metrics = read_metrics(ray_server.root)
    up = {key: value for key, value in metrics.items() if key.startswith("insieme:replica_up")}
    assert len(up) == 2 and all(value == 1.0 for value in up.values()), up
    served = [key for key in metrics if key.startswith("insieme:replica_requests_total")]
    assert {key.split("node=")[1].split(",")[0] for key in served} == {"127.0.0.2", "127.0.0.3"}
