"""--api-key: requests without the right bearer key get 401 in the contract's shape."""

from __future__ import annotations

import httpx
import openai
import pytest

from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from tests.conftest import MODEL, InProcessServer

USER = [{"role": "user", "content": "hi"}]


def test_auth_on() -> None:
    with InProcessServer(FakeEngine(), ServerConfig(api_key="sesame")) as srv:
        url = f"{srv.root}/v1/chat/completions"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
            r = httpx.post(url, json={"model": MODEL, "messages": USER}, headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["type"] == "authentication_error"
            assert r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{srv.root}/v1/models").status_code == 401
        ok = httpx.post(url, json={"model": MODEL, "messages": USER},
                        headers={"Authorization": "Bearer sesame"})
        assert ok.status_code == 200
        assert httpx.get(f"{srv.root}/health").status_code == 200  # probes need no key
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{srv.root}/v1", api_key="wrong", max_retries=0) \
                .chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]


def test_auth_off_accepts_any_key() -> None:
    with InProcessServer(FakeEngine(), ServerConfig()) as srv:
        r = httpx.post(f"{srv.root}/v1/chat/completions", json={"model": MODEL, "messages": USER},
                       headers={"Authorization": "Bearer anything"})
        assert r.status_code == 200
