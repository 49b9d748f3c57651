"""GET /metrics: vLLM's metric names under insieme:, and values that add up to what the
requests were told in their usage."""

from __future__ import annotations

import json

import httpx

from tests.conftest import MODEL, Server, read_metrics

USER = [{"role": "user", "content": "hi"}]

NAMES = [
    "insieme:time_to_first_token_seconds_count",
    "insieme:inter_token_latency_seconds_count",
    "insieme:e2e_request_latency_seconds_count",
    "insieme:request_queue_time_seconds_count",
    "insieme:num_requests_running",
    "insieme:num_requests_waiting",
    "insieme:kv_cache_usage_perc",
    "insieme:prompt_tokens_total",
    "insieme:generation_tokens_total",
    "insieme:prefix_cache_queries_total",
    "insieme:prefix_cache_hits_total",
    "insieme:spec_decode_num_drafts_total",
    "insieme:spec_decode_num_draft_tokens_total",
    "insieme:spec_decode_num_accepted_tokens_total",
]


def _stream_usage(response: httpx.Response) -> dict[str, int]:
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1] if json.loads(e).get("usage")][-1]["usage"]


def test_names_follow_vllm(fake_server: Server) -> None:
    response = httpx.get(f"{fake_server.root}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    metrics = read_metrics(fake_server.root)
    for name in NAMES:
        assert name in metrics, name


def test_values_agree_with_usage(fake_server: Server) -> None:
    url = fake_server.base_url
    prompt_tokens = completion_tokens = 0
    finishes: dict[str, int] = {}
    requests = [
        ("chat/completions", {"messages": USER}),
        ("chat/completions", {"messages": USER, "max_tokens": 3}),
        ("chat/completions", {"messages": USER, "stream": True}),
        ("chat/completions", {"messages": USER, "stream": True, "max_tokens": 2}),
        ("completions", {"prompt": "Once upon a time"}),
        ("completions", {"prompt": "Once", "stream": True, "max_tokens": 4}),
    ]
    for route, body in requests:
        response = httpx.post(f"{url}/{route}", json={"model": MODEL, **body})
        assert response.status_code == 200
        if body.get("stream"):
            usage = _stream_usage(response)
            finish = "length" if "max_tokens" in body else "stop"
        else:
            usage = response.json()["usage"]
            finish = response.json()["choices"][0]["finish_reason"]
        prompt_tokens += usage["prompt_tokens"]
        completion_tokens += usage["completion_tokens"]
        finishes[finish] = finishes.get(finish, 0) + 1
    for status, body in ((404, {"model": "nope", "messages": USER}), (400, {"model": MODEL})):
        assert httpx.post(f"{url}/chat/completions", json=body).status_code == status

    metrics = read_metrics(fake_server.root)
    assert metrics["insieme:prompt_tokens_total"] == prompt_tokens
    assert metrics["insieme:generation_tokens_total"] == completion_tokens
    assert metrics["insieme:prefix_cache_queries_total"] == prompt_tokens
    for reason, count in finishes.items():
        assert metrics[f"insieme:request_success_total{{finished_reason={reason}}}"] == count
    for histogram in ("time_to_first_token_seconds", "e2e_request_latency_seconds",
                      "request_queue_time_seconds"):
        assert metrics[f"insieme:{histogram}_count"] == len(requests), histogram
    # Every token after a choice's first is one inter-token gap.
    assert metrics["insieme:inter_token_latency_seconds_count"] == \
        completion_tokens - len(requests)
    assert metrics["insieme:request_errors_total{status=404}"] == 1
    assert metrics["insieme:request_errors_total{status=400}"] == 1
    assert metrics["insieme:num_requests_running"] == 0
    assert metrics["insieme:num_requests_waiting"] == 0


def test_n_choices_count_every_token(fake_server: Server) -> None:
    response = httpx.post(f"{fake_server.base_url}/chat/completions",
                          json={"model": MODEL, "messages": USER, "n": 3, "max_tokens": 4})
    usage = response.json()["usage"]
    metrics = read_metrics(fake_server.root)
    assert usage["completion_tokens"] == 12
    assert metrics["insieme:generation_tokens_total"] == 12
    assert metrics["insieme:prompt_tokens_total"] == usage["prompt_tokens"]  # once, not n times
    assert metrics["insieme:request_success_total{finished_reason=length}"] == 1

