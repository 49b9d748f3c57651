"""Several models behind one server, over HTTP, on scripted engines: requests route by their
`model`, /v1/models lists every model with its type and whether it is loaded, a streamed
request for a model still loading gets pings first, a model that fails to load is a 500
naming its file while the others serve, and metrics and the ledger name the model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from insieme.api.registry import ModelRegistry
from insieme.catalog import CatalogConfig, ModelSpec
from insieme.config import EngineConfig, ServerConfig
from insieme.engine.fake import FakeEngine
from insieme.ledger import usage_totals
from tests.api.test_errors import check_error
from tests.conftest import InProcessServer

USER = [{"role": "user", "content": "hi"}]
BROKEN = "/models/broken.gguf"


class BrokenEngine(FakeEngine):
    async def wait_ready(self) -> None:
        from insieme.errors import ConfigError

        raise ConfigError(f"could not load {BROKEN}: unknown model architecture 'nope'")


def catalog() -> CatalogConfig:
    # The factory tells the models apart by max_num_seqs.
    return CatalogConfig((
        ModelSpec(("org/chat", "chat"), EngineConfig(max_num_seqs=1), context_length=2048),
        ModelSpec(("slow",), EngineConfig(max_num_seqs=2), context_length=512),
        ModelSpec(("embedder",), EngineConfig(max_num_seqs=3), task="embed"),
        ModelSpec(("reranker",), EngineConfig(max_num_seqs=4), task="rerank"),
        ModelSpec(("broken",), EngineConfig(max_num_seqs=5)),
    ), load_timeout=10.0)


def build(config: EngineConfig) -> FakeEngine:
    if config.max_num_seqs == 5:
        return BrokenEngine()
    replies = {1: "I am the chat model.", 2: "I am the slow one."}
    return FakeEngine(replies.get(config.max_num_seqs, "-"), token_delay=0.001,
                      start_delay=1.0 if config.max_num_seqs == 2 else 0.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ledger = tmp_path / "usage.sqlite3"
    config = ServerConfig(served_model_names=("org/chat", "chat"), usage_db=str(ledger))
    registry = ModelRegistry(catalog(), build)
    with InProcessServer(registry, config) as srv:  # type: ignore[arg-type]
        yield srv.root, ledger


def chat(root: str, model: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{root}/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": USER, **extra})


def test_requests_route_by_model_and_load_on_demand(server: tuple[str, Path]) -> None:
    root, _ = server
    listed = {m["id"]: m for m in httpx.get(f"{root}/v1/models").json()["data"]}
    assert listed["org/chat"]["loaded"] and not listed["slow"]["loaded"]
    first = chat(root, "chat").json()
    assert first["model"] == "org/chat"
    assert first["choices"][0]["message"]["content"] == "I am the chat model."
    second = chat(root, "slow").json()  # waits for its load, then answers
    assert second["model"] == "slow"
    assert second["choices"][0]["message"]["content"] == "I am the slow one."
    assert httpx.get(f"{root}/v1/models").json()["data"][2]["loaded"]


def test_models_list_every_model_with_its_type(server: tuple[str, Path]) -> None:
    root, _ = server
    cards = httpx.get(f"{root}/v1/models").json()["data"]
    assert [(c["id"], c["type"]) for c in cards] == [
        ("org/chat", "chat"), ("chat", "chat"), ("slow", "chat"), ("embedder", "embedding"),
        ("reranker", "rerank"), ("broken", "chat")]
    assert cards[2]["context_length"] == 512 and cards[0]["pricing"]["input"] == 0
    bare = httpx.get(f"{root}/v1/models", headers={"User-Agent": "Together/v1 Python"}).json()
    assert [c["id"] for c in bare] == [c["id"] for c in cards]


def test_a_stream_pings_while_its_model_loads(server: tuple[str, Path]) -> None:
    root, _ = server
    with httpx.stream("POST", f"{root}/v1/chat/completions", timeout=30,
                      json={"model": "slow", "messages": USER, "stream": True}) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[0] == ": ping"
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in data
                   if c["choices"]) == "I am the slow one."
    assert lines[-1] == "data: [DONE]"


def test_a_model_that_fails_to_load_is_a_500_naming_it(server: tuple[str, Path]) -> None:
    root, _ = server
    error = check_error(chat(root, "broken"), 500, None)
    assert BROKEN in error["message"] and "architecture" in error["message"]
    assert error["code"] == "model_load_failed"
    with httpx.stream("POST", f"{root}/v1/chat/completions", timeout=30,
                      json={"model": "broken", "messages": USER, "stream": True}) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert BROKEN in json.loads(events[-1][6:])["error"]["message"]
    assert chat(root, "chat").status_code == 200  # the rest serves on
    health = httpx.get(f"{root}/health")
    assert health.status_code == 200
    states = {m["id"]: m for m in health.json()["models"]}
    assert states["broken"]["state"] == "failed" and BROKEN in states["broken"]["error"]
    assert states["org/chat"]["state"] == "loaded" and states["slow"]["state"] == "unloaded"


def test_unknown_and_wrong_task_models_are_refused(server: tuple[str, Path]) -> None:
    root, _ = server
    missing = check_error(chat(root, "gpt-4o"), 404, "model")
    assert missing["code"] == "model_not_found"
    assert "org/chat, chat, slow, embedder, reranker, broken" in missing["message"]
    wrong = check_error(chat(root, "embedder"), 400, "model")
    assert "embeddings" in wrong["message"] and wrong["code"] == "model_not_supported"
    completion = httpx.post(f"{root}/v1/completions", json={"model": "reranker", "prompt": "x"})
    assert check_error(completion, 400, "model")["code"] == "model_not_supported"


def test_metrics_and_ledger_name_the_model(server: tuple[str, Path]) -> None:
    root, ledger = server
    chat(root, "chat", max_tokens=3)
    chat(root, "slow", max_tokens=3)
    chat(root, "slow", max_tokens=3)
    text = httpx.get(f"{root}/metrics").text
    assert 'insieme:generation_tokens_total{model_name="slow"} 6.0' in text
    assert 'insieme:generation_tokens_total{model_name="org/chat"} 3.0' in text
    assert 'insieme:model_loaded{model_name="slow"} 1.0' in text
    assert 'insieme:model_loaded{model_name="embedder"} 0.0' in text
    assert 'insieme:num_requests_running{model_name="slow"}' in text
    assert 'insieme:model_loads_total{model_name="slow"} 1.0' in text
    # The ledger's thread commits each row soon after its request ends.
    for _ in range(100):
        if sum(t.requests for t in usage_totals(ledger)) >= 3:
            break
        time.sleep(0.05)
    by_model = {t.model: t.requests for t in usage_totals(ledger)}
    assert by_model == {"org/chat": 1, "slow": 2}
