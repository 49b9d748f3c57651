"""Per-request limits: body size (413), prompt tokens and max_tokens (400), and a timeout
(504, or an error event once a stream has begun), each in the contract's error body."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from insieme.config import LimitsConfig, ServerConfig
from insieme.engine.fake import FakeEngine
from insieme.errors import ConfigError
from tests.api.test_errors import check_error
from tests.conftest import MODEL, InProcessServer

USER = [{"role": "user", "content": "hi"}]
LIMITS = LimitsConfig(max_request_bytes=4096, max_prompt_tokens=200, max_tokens_cap=64,
                      request_timeout=0.5)


@pytest.fixture(scope="module")
def limited() -> Iterator[str]:
    engine = FakeEngine(reply=lambda prompt: "slow " * 40 if "slow" in prompt else "quick")
    config = ServerConfig(limits=LIMITS, default_max_tokens=64)
    with InProcessServer(engine, config) as srv:
        engine.token_delay = 0.05  # 40 tokens take 2 s: past the 0.5 s timeout
        yield f"{srv.root}/v1"


def test_body_too_large(limited: str) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
    check_error(httpx.post(f"{limited}/chat/completions", json=big), 413, None)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(big).encode()

    response = httpx.post(f"{limited}/chat/completions", content=chunks(),
                          headers={"Content-Type": "application/json"})
    assert check_error(response, 413, None)["code"] == "request_too_large"


def test_prompt_and_max_tokens_limits(limited: str) -> None:
    long = [{"role": "user", "content": "word " * 60}]  # ~330 fake tokens
    error = check_error(httpx.post(f"{limited}/chat/completions",
                                   json={"model": MODEL, "messages": long}), 400, "messages")
    assert error["code"] == "prompt_too_long"
    error = check_error(httpx.post(f"{limited}/completions",
                                   json={"model": MODEL, "prompt": "p" * 300}), 400, "prompt")
    assert error["code"] == "prompt_too_long"
    error = check_error(httpx.post(f"{limited}/chat/completions",
                                   json={"model": MODEL, "messages": USER, "max_tokens": 65}),
                        400, "max_tokens")
    assert "64" in error["message"]
    ok = httpx.post(f"{limited}/chat/completions",
                    json={"model": MODEL, "messages": USER, "max_tokens": 64})
    assert ok.status_code == 200


def test_timeout_without_stream_is_504(limited: str) -> None:
    slow = [{"role": "user", "content": "slow"}]
    response = httpx.post(f"{limited}/chat/completions", json={"model": MODEL, "messages": slow})
    assert check_error(response, 504, None)["code"] == "request_timeout"
    assert httpx.post(f"{limited}/chat/completions",
                      json={"model": MODEL, "messages": USER}).status_code == 200


def test_timeout_in_a_stream_is_an_error_event(limited: str) -> None:
    slow = [{"role": "user", "content": "slow"}]
    response = httpx.post(f"{limited}/chat/completions",
                          json={"model": MODEL, "messages": slow, "stream": True})
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert len(events) > 2  # some tokens came first
    last = json.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert "limit of 0.5 s" in last["error"]["message"]
    # The same error as without a stream, not a server fault.
    assert (last["error"]["type"], last["error"]["code"]) == ("timeout_error", "request_timeout")


def test_limits_check_themselves() -> None:
    with pytest.raises(ConfigError):
        LimitsConfig(max_request_bytes=10)
    with pytest.raises(ConfigError):
        LimitsConfig(request_timeout=0)
    with pytest.raises(ConfigError, match="max-tokens-cap"):
        ServerConfig(limits=LimitsConfig(max_tokens_cap=100), default_max_tokens=512)
