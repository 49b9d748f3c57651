"""The raw wire on the real model: SSE framing, every field of the seed's chunk, stop strings,
seeds, lengths, and a server that stays responsive while it generates."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import MODEL, SEED_MODEL, Server

pytestmark = pytest.mark.model

SEED_MESSAGES = [{"role": "user", "content": "What are some fun things to do in New York?"}]


def sse_events(response: httpx.Response) -> list[str]:
    """The data payloads in order; asserts the framing (no event names, blank separators)."""
    payloads = []
    for line in response.iter_lines():
        if not line or line.startswith(":"):
            continue
        assert line.startswith("data: "), line
        payloads.append(line[len("data: "):])
    return payloads


def stream_chat(server: Server, **body: object) -> tuple[httpx.Response, list[str]]:
    payload = {"model": SEED_MODEL, "messages": SEED_MESSAGES, "stream": True, **body}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=payload,
                      timeout=120) as response:
        return response, sse_events(response)


def test_seed_chunk_fields(real_server: Server) -> None:
    response, payloads = stream_chat(real_server, max_tokens=20, temperature=0)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 20  # one chunk per generated token
    roles = [c["choices"][0]["delta"].get("role") for c in chunks]
    assert roles[0] == "assistant" and not any(roles[1:])
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == MODEL
        assert isinstance(chunk["id"], str) and isinstance(chunk["created"], int)
        token = chunk["token"]
        assert set(token) == {"id", "text", "logprob", "special"}
        assert isinstance(token["id"], int) and token["logprob"] <= 0
        assert token["special"] is False
        delta = chunk["choices"][0]["delta"]
        assert "tool_calls" in delta and delta["tool_calls"] is None
        assert delta["token_id"] == token["id"]
        assert token["text"] == delta["content"]
        for key in ("generated_text", "stats", "usage", "finish_reason"):
            assert key in chunk
    for chunk in chunks[:-1]:
        assert chunk["finish_reason"] is None and chunk["usage"] is None
        assert chunk["generated_text"] is None
    last = chunks[-1]
    assert last["finish_reason"] == "length" == last["choices"][0]["finish_reason"]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert last["generated_text"] == text
    usage = last["usage"]
    assert usage["completion_tokens"] == 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + 20
    assert usage["prompt_tokens"] > 10


def test_token_ids_are_the_models(real_server: Server) -> None:
    # Greedy: the same request gives the same token ids, and they decode to the text.
    _, first = stream_chat(real_server, max_tokens=8, temperature=0)
    _, second = stream_chat(real_server, max_tokens=8, temperature=0)
    ids = [json.loads(p)["token"]["id"] for p in first[:-1]]
    assert ids == [json.loads(p)["token"]["id"] for p in second[:-1]]
    assert len(set(ids)) > 1


def test_include_usage_adds_a_final_chunk(real_server: Server) -> None:
    _, payloads = stream_chat(real_server, max_tokens=5, temperature=0,
                              stream_options={"include_usage": True})
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-2]["finish_reason"] == "length"


def test_stop_string_never_leaks(real_server: Server) -> None:
    free = httpx.post(f"{real_server.base_url}/chat/completions", timeout=120, json={
        "model": MODEL, "messages": SEED_MESSAGES, "max_tokens": 60, "temperature": 0,
    }).json()["choices"][0]["message"]["content"]
    # A stop string that spans several tokens and starts mid-token: "ork is" from "York is".
    assert "York is" in free or "York" in free
    stop = "ork" if "York is" not in free else "ork is"
    _, payloads = stream_chat(real_server, max_tokens=60, temperature=0, stop=[stop, "zzz"],
                              model=MODEL)
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert stop not in text
    assert free.startswith(text)
    assert free[len(text):].startswith(stop)
    assert chunks[-1]["finish_reason"] == "stop"
    assert chunks[-1]["generated_text"] == text
    plain = httpx.post(f"{real_server.base_url}/chat/completions", timeout=120, json={
        "model": MODEL, "messages": SEED_MESSAGES, "max_tokens": 60, "temperature": 0,
        "stop": stop,
    }).json()
    assert plain["choices"][0]["message"]["content"] == text
    assert plain["choices"][0]["finish_reason"] == "stop"


def test_seed_reproducible_at_temperature(real_server: Server) -> None:
    def sample(seed: int) -> str:
        body = {"model": MODEL, "messages": SEED_MESSAGES, "max_tokens": 24,
                "temperature": 0.8, "seed": seed}
        r = httpx.post(f"{real_server.base_url}/chat/completions", json=body, timeout=120)
        return str(r.json()["choices"][0]["message"]["content"])

    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(seed) != first for seed in (1, 2, 3))


def test_max_tokens_and_length(real_server: Server) -> None:
    r = httpx.post(f"{real_server.base_url}/completions", timeout=120, json={
        "model": MODEL, "prompt": "One, two, three,", "max_tokens": 7, "temperature": 0})
    body = r.json()
    assert body["object"] == "text_completion"  # openai's name: httpx is no Together SDK
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 7
    assert body["prompt"] == []


def test_completion_stream_shape(real_server: Server) -> None:
    payload = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "stream": True,
               "temperature": 0}
    with httpx.stream("POST", f"{real_server.base_url}/completions", json=payload,
                      headers={"User-Agent": "Together/Python 3.1.1"}, timeout=60) as response:
        payloads = sse_events(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "completion.chunk" for c in chunks)
    assert all(set(c["token"]) == {"id", "text", "logprob", "special"} for c in chunks)
    assert chunks[-1]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_n_choices_share_one_prompt(real_server: Server) -> None:
    r = httpx.post(f"{real_server.base_url}/chat/completions", timeout=120, json={
        "model": MODEL, "messages": SEED_MESSAGES, "max_tokens": 8, "temperature": 0.9,
        "seed": 7, "n": 3})
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 24
    assert len({c["message"]["content"] for c in body["choices"]}) > 1


def test_health_answers_during_generation(real_server: Server) -> None:
    done = threading.Event()

    def long_generation() -> None:
        httpx.post(f"{real_server.base_url}/chat/completions", timeout=300, json={
            "model": MODEL, "messages": SEED_MESSAGES, "max_tokens": 300, "temperature": 0})
        done.set()

    worker = threading.Thread(target=long_generation)
    worker.start()
    time.sleep(0.5)
    slowest = 0.0
    for _ in range(10):
        started = time.monotonic()
        assert httpx.get(f"{real_server.root}/health", timeout=5).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    assert not done.is_set(), "the generation should still be running"
    assert slowest < 0.5
    worker.join()
