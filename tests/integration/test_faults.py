"""Fault injection on the real engine, and metrics that agree with what was sent.

With INSIEME_FAULT_INJECTION=1 a request may carry ``X-Insieme-Fault: N``: the engine's
sampling then raises for that request once it has N tokens, the real per-sequence failure
path. That request ends with an error event; the others in the same batch finish; the server
stays up and its metrics count exactly what the clients were told.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import MODEL, Server, read_metrics, start_real_server, stop_server

pytestmark = pytest.mark.model

TOKENS = 16


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # One llama.cpp thread: its threads spin, and slow down many times over on a shared CPU.
    srv = start_real_server("--threads", "1", "--max-num-seqs", "8",
                            env={"INSIEME_FAULT_INJECTION": "1"})
    yield srv
    stop_server(srv)


def stream(server: Server, text: str, fault: int | None = None) -> list[dict]:  # type: ignore[type-arg]
    headers = {"X-Insieme-Fault": str(fault)} if fault is not None else {}
    body = {"model": MODEL, "stream": True, "max_tokens": TOKENS, "ignore_eos": True,
            "temperature": 0, "messages": [{"role": "user", "content": text}]}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                      headers=headers, timeout=120) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return [json.loads(line) if line != "[DONE]" else {"done": True} for line in lines]


def test_a_failing_request_ends_alone(server: Server) -> None:
    before = read_metrics(server.root)
    texts = ["Story 0, please.", "Story 1, please.", "Story 2, please.", "Story 2, please.",
             "Story 4, please.", "Story 5, please."]
    with ThreadPoolExecutor(len(texts)) as pool:
        futures = [pool.submit(stream, server, text, 5 if i == 2 else None)
                   for i, text in enumerate(texts)]
        results = [f.result() for f in futures]
    failed = results[2]
    assert "error" in failed[-1] and not failed[-1].get("done")
    error = failed[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    assert "injected fault" in error["message"]
    assert len([e for e in failed if e.get("choices")]) == 5  # its tokens before the fault
    usages = [events[-2]["usage"] for i, events in enumerate(results) if i != 2]
    for events in results[:2] + results[3:]:
        assert events[-1] == {"done": True}
    assert all(u["completion_tokens"] == TOKENS for u in usages)
    # The failed request's prompt is the same as the next one's.
    prompt_tokens = sum(u["prompt_tokens"] for u in usages) + usages[2]["prompt_tokens"]
    completion_tokens = sum(u["completion_tokens"] for u in usages) + 5

    after = read_metrics(server.root)

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    # The metrics agree with what the clients were told, the failure included.
    assert delta("insieme:prompt_tokens_total") == prompt_tokens
    assert delta("insieme:generation_tokens_total") == completion_tokens
    assert delta("insieme:prefix_cache_queries_total") == prompt_tokens
    assert delta("insieme:request_success_total{finished_reason=length}") == 5
    assert delta("insieme:request_errors_total{status=500}") == 1
    for histogram in ("time_to_first_token_seconds", "request_queue_time_seconds"):
        assert delta(f"insieme:{histogram}_count") == 6
    assert delta("insieme:e2e_request_latency_seconds_count") == 5
    assert delta("insieme:inter_token_latency_seconds_count") == completion_tokens - 6
    assert after["insieme:num_requests_running"] == 0
    assert after["insieme:kv_cache_sequences"] == 0

    # A fault before the first token, without streaming: a 500 in the contract's body.
    response = httpx.post(f"{server.base_url}/chat/completions",
                          headers={"X-Insieme-Fault": "0"}, timeout=60,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 500
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    # The server stays up and serves the next request normally.
    assert httpx.get(f"{server.root}/health").status_code == 200
    assert stream(server, "And another.")[-1] == {"done": True}
    assert read_metrics(server.root)["insieme:request_errors_total{status=500}"] == 2
