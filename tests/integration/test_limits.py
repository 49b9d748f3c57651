"""Bad input against the real model: clear errors, and the server stays healthy."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MODEL, Server

pytestmark = pytest.mark.model


def test_prompt_longer_than_context(real_server: Server) -> None:
    url = f"{real_server.base_url}/chat/completions"
    long = [{"role": "user", "content": "apple " * 1500}]  # > --max-model-len 1024
    r = httpx.post(url, json={"model": MODEL, "messages": long}, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    assert r.json()["error"]["code"] == "context_length_exceeded"
    r = httpx.post(url, timeout=120, json={
        "model": MODEL, "messages": long, "max_tokens": 4,
        "context_length_exceeded_behavior": "truncate"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] <= 1024 - 4
    assert r.json()["usage"]["completion_tokens"] == 4


def test_image_part_on_text_model(real_server: Server) -> None:
    r = httpx.post(f"{real_server.base_url}/chat/completions", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}}]}]})
    assert r.status_code == 400
    assert "text-only" in r.json()["error"]["message"]
    assert httpx.get(f"{real_server.root}/health").status_code == 200


def test_invalid_json_then_healthy(real_server: Server) -> None:
    r = httpx.post(f"{real_server.base_url}/chat/completions", content=b"\xff\xfe{",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    ok = httpx.post(f"{real_server.base_url}/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200
