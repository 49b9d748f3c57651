"""--api-keys-file: named keys stored as hashes, each with its own per-minute limits."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from insieme.api.keys import ApiKey, KeyRing, RateLimiter, hash_key, load_keys_file
from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from insieme.errors import ConfigError, RateLimitError
from tests.conftest import MODEL, InProcessServer

USER = [{"role": "user", "content": "hi"}]


def write_keys(tmp_path: Path, body: str) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(body)
    return str(path)


def keys_file(tmp_path: Path) -> str:
    return write_keys(tmp_path, f"""
[keys.alice]
sha256 = "{hash_key('alice-secret')}"

[keys.bob]
sha256 = "{hash_key('bob-secret')}"
requests_per_minute = 2

[keys.carol]
sha256 = "{hash_key('carol-secret')}"
tokens_per_minute = 60
""")


def test_keyring_matches_by_hash(tmp_path: Path) -> None:
    ring = KeyRing.from_config("single", keys_file(tmp_path))
    assert ring.authenticate("Bearer alice-secret").name == "alice"  # type: ignore[union-attr]
    assert ring.authenticate("bearer bob-secret").name == "bob"  # type: ignore[union-attr]
    assert ring.authenticate("Bearer single").name == "default"  # type: ignore[union-attr]
    for header in ("", "Bearer", "Bearer wrong", "alice-secret", "Basic alice-secret",
                   f"Bearer {hash_key('alice-secret')}"):  # the hash itself is no key
        assert ring.authenticate(header) is None
    assert "alice-secret" not in Path(keys_file(tmp_path)).read_text()


@pytest.mark.parametrize("body", [
    "",
    "[keys.a]\nsha256 = 'abc'\n",
    f"[keys.a]\nsha256 = '{'z' * 64}'\n",
    f"[keys.a]\nsha256 = '{'a' * 64}'\nrequests_per_minute = 0\n",
    f"[keys.a]\nsha256 = '{'a' * 64}'\ntokens_per_minute = 'lots'\n",
    f"[keys.a]\nsha256 = '{'a' * 64}'\nsecret = 'oops'\n",
    "keys = [",
])
def test_bad_keys_files(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError, match="api-keys-file"):
        load_keys_file(write_keys(tmp_path, body))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_slide() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    key = ApiKey("k", "0" * 64, requests_per_minute=2)
    limiter.admit(key)
    clock.now += 10
    limiter.admit(key)
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(key)
    assert refused.value.headers["Retry-After"] == "50"
    clock.now += 50  # the first request leaves the window
    limiter.admit(key)


def test_tokens_per_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    key = ApiKey("k", "0" * 64, tokens_per_minute=100)
    first = limiter.reserve(key, 60, 0)
    limiter.settle(first, 60)
    clock.now += 30
    with pytest.raises(RateLimitError) as refused:
        limiter.reserve(key, 50, 0)  # 60 + 50 > 100
    assert refused.value.headers["Retry-After"] == "30"
    limiter.settle(limiter.reserve(key, 40, 0), 40)
    with pytest.raises(RateLimitError):
        limiter.admit(key)  # nothing left this minute
    clock.now += 31
    limiter.admit(key)
    with pytest.raises(RateLimitError, match="more than key 'k' may use"):
        limiter.reserve(key, 101, 0)


def test_tokens_per_minute_reserves_max_tokens_then_refunds() -> None:
    """Concurrent requests are admitted against all they may generate, not only their
    prompts (which let them overshoot the limit together); what they did not use comes back."""
    clock = Clock()
    limiter = RateLimiter(clock)
    key = ApiKey("k", "0" * 64, tokens_per_minute=100)
    running = limiter.reserve(key, 10, 50)  # holds 60 while it runs
    with pytest.raises(RateLimitError):
        limiter.reserve(key, 10, 50)  # a second at once would reach 120
    limiter.settle(running, 10 + 5)  # it stopped after 5 tokens: 45 come back
    limiter.reserve(key, 10, 50)  # 15 + 60 fits
    # One request may always ask for up to the whole minute.
    clock.now += 61
    limiter.reserve(key, 10, 5000)


def test_keys_and_limits_over_http(tmp_path: Path) -> None:
    config = ServerConfig(api_keys_file=keys_file(tmp_path))
    with InProcessServer(FakeEngine(), config) as srv:
        url = f"{srv.root}/v1/chat/completions"
        body = {"model": MODEL, "messages": USER, "max_tokens": 2}

        def post(secret: str) -> httpx.Response:
            return httpx.post(url, json=body, headers={"Authorization": f"Bearer {secret}"})

        assert httpx.post(url, json=body).status_code == 401
        assert post("nobody").status_code == 401
        for _ in range(3):
            assert post("alice-secret").status_code == 200  # no limits
        assert post("bob-secret").status_code == 200
        assert post("bob-secret").status_code == 200
        refused = post("bob-secret")
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        # carol may use 60 tokens a minute; the fake's chat prompt for "hi" is ~30 tokens.
        statuses = [post("carol-secret").status_code for _ in range(4)]
        assert statuses[0] == 200 and statuses[-1] == 429
        # Probes and scrapes need no key.
        assert httpx.get(f"{srv.root}/health").status_code == 200
        assert httpx.get(f"{srv.root}/metrics").status_code == 200
        assert httpx.get(f"{srv.root}/v1/models").status_code == 401
