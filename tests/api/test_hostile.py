"""Hostile requests, answered in the contract's shape without costing anyone else (issue 13):
each bound on what one request may make the server compute is a 400 that names it, a dead
engine is a 503 with the reason, and a key's tokens per minute hold under concurrency.

These run on the scripted engine (the API layer's checks); tests/integration/test_hostile.py
runs the same holes against the real one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from insieme.api.keys import hash_key
from insieme.config import LimitsConfig, ServerConfig
from insieme.engine.fake import FakeEngine
from tests.api.test_errors import check_error
from tests.conftest import MODEL, InProcessServer

USER = [{"role": "user", "content": "hi"}]
LIMITS = LimitsConfig(max_messages=8, max_tools=4, max_stop_strings=3, max_stop_length=10,
                      max_schema_bytes=2000, max_prompt_chars=500)


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with InProcessServer(FakeEngine(max_running=4), ServerConfig(limits=LIMITS)) as srv:
        yield srv.root


def chat(root: str, **fields: object) -> httpx.Response:
    return httpx.post(f"{root}/v1/chat/completions",
                      json={"model": MODEL, "messages": USER, "max_tokens": 4, **fields})


def raw_chat(root: str, text: str) -> httpx.Response:
    return httpx.post(f"{root}/v1/chat/completions", content=text,
                      headers={"Content-Type": "application/json"})


def tool(name: str, parameters: dict[str, object] | None = None) -> dict[str, object]:
    return {"type": "function",
            "function": {"name": name, "parameters": parameters or {"type": "object"}}}


def test_n_above_the_sequences_the_engine_runs_is_refused(root: str) -> None:
    error = check_error(chat(root, n=5), 400, "n")
    assert error["code"] == "n_too_large" and "4" in error["message"]
    assert chat(root, n=4).status_code == 200


def test_deep_nesting_is_a_400_not_a_500(root: str) -> None:
    body = '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "x": %s}'
    error = check_error(raw_chat(root, body % (MODEL, "[" * 30_000 + "]" * 30_000)), 400, None)
    assert error["code"] == "json_too_deep"
    deep_schema = '{"type": "array", "items": ' * 3000 + '{"type": "string"}' + "}" * 3000
    text = json.dumps({"model": MODEL, "messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": "SCHEMA"}}})
    text = text.replace('"SCHEMA"', deep_schema)
    assert check_error(raw_chat(root, text), 400, None)["code"] == "json_too_deep"
    # Nesting within the limit is fine.
    assert raw_chat(root, body % (MODEL, "[" * 40 + "]" * 40)).status_code == 200
    assert httpx.get(f"{root}/health").status_code == 200


@pytest.mark.parametrize(("fields", "param", "code"), [
    ({"messages": USER * 9}, "messages", "too_many_messages"),
    ({"tools": [tool(f"f{i}") for i in range(5)]}, "tools", "too_many_tools"),
    ({"stop": ["a", "b", "c", "d"]}, "stop", "too_many_stop_strings"),
    ({"stop": "x" * 11}, "stop", "stop_too_long"),
    ({"messages": [{"role": "user", "content": "y" * 501}]}, "messages", "prompt_too_long"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "big", "schema": {"enum": [f"value {i}" for i in range(300)]}}}},
     "response_format.json_schema.schema", "schema_too_large"),
    ({"tools": [tool("big", {"type": "object", "properties": {
        "a": {"enum": [f"value {i}" for i in range(300)]}}})], "tool_choice": "required"},
     "tools", "schema_too_large"),
])
def test_each_bound_is_a_400_naming_it(root: str, fields: dict[str, object], param: str,
                                       code: str) -> None:
    error = check_error(chat(root, **fields), 400, param)
    assert error["code"] == code
    assert "--max-" in error["message"]


def test_within_the_bounds_is_served(root: str) -> None:
    fields = {"messages": USER * 8, "tools": [tool(f"f{i}") for i in range(4)],
              "stop": ["a" * 10, "b", "c"]}
    assert chat(root, **fields).status_code == 200
    completion = httpx.post(f"{root}/v1/completions",
                            json={"model": MODEL, "prompt": "z" * 501, "max_tokens": 2})
    assert check_error(completion, 400, "prompt")["code"] == "prompt_too_long"


def test_a_dead_engine_answers_503_with_its_reason() -> None:
    engine = FakeEngine(token_delay=0.01)
    with InProcessServer(engine, ServerConfig()) as srv:
        assert httpx.get(f"{srv.root}/health").status_code == 200
        engine.fail("the engine stopped: disk on fire")
        health = check_error(httpx.get(f"{srv.root}/health"), 503, None)
        assert health["code"] == "engine_failed" and "disk on fire" in health["message"]
        refused = check_error(chat(srv.root), 503, None)
        assert "disk on fire" in refused["message"]


def test_tokens_per_minute_hold_under_concurrency(tmp_path: Path) -> None:
    """Ten concurrent requests, each of which may use 30 tokens, against a key allowed 100 a
    minute: only as many as fit are admitted at once (the rest get 429), so the minute's
    total stays within the limit. Charging completion tokens only at the end let all ten in."""
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.k]\nsha256 = "{hash_key("s")}"\ntokens_per_minute = 100\n')
    engine = FakeEngine(reply="one two three four five six seven eight nine ten eleven twelve "
                        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty",
                        token_delay=0.02)
    with InProcessServer(engine, ServerConfig(api_keys_file=str(keys))) as srv:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(headers={"Authorization": "Bearer s"},
                                         timeout=30) as client:
                return await asyncio.gather(*(client.post(
                    f"{srv.root}/v1/completions",
                    json={"model": MODEL, "prompt": "0123456789", "max_tokens": 20})
                    for _ in range(10)))

        responses = asyncio.run(burst())
    served = [r.json() for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(served) + len(refused) == 10 and refused and served
    used = sum(body["usage"]["total_tokens"] for body in served)
    assert used <= 100, used
    assert all(r.headers.get("Retry-After") for r in refused)
    assert json.loads(refused[0].text)["error"]["type"] == "rate_limit_error"
