"""One `insieme serve` with a whole catalogue from its config file: two chat models, an
embedding model and a reranker, the bundled model playing every part. The SDK calls a
retrieval-augmented app makes run against it unchanged; a model asked for what its task is
not gets a 400 in the contract's error shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import together

from tests.conftest import Server, start_real_server, stop_server
from tests.deps import require_folder

pytestmark = pytest.mark.model

USER = [{"role": "user", "content": "Name three colours."}]
SENTENCES = ["The cat is sleeping on the sofa.", "Quarterly tax filings are due in April."]
QUERY = "What is the capital of France?"
DOCUMENTS = ["Bananas are a good source of potassium.",
             "Paris is the capital and largest city of France.",
             "Photosynthesis turns light into chemical energy in plants."]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("config") / "insieme.toml"
    config.write_text("""
threads = 1
model-load-timeout = 600  # a busy test machine: waits run long, never into a 503

[models.chat-a]
task = "chat"
max-model-len = 512
max-num-seqs = 2
threads = 1

[models.chat-b]
task = "chat"
max-model-len = 512
max-num-seqs = 1
threads = 1

[models.embedder]
task = "embed"
max-model-len = 512
max-num-seqs = 2
threads = 1

[models.reranker]
task = "rerank"
max-model-len = 512
max-num-seqs = 2
threads = 1
""")
    srv = start_real_server("--config", str(config), named=False, timeout=600)
    yield srv
    stop_server(srv)


def _together(server: Server) -> together.Together:
    return together.Together(base_url=server.base_url, api_key="unused", max_retries=0,
                             timeout=600)


def _openai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                         timeout=600)


def _refused(response: httpx.Response) -> dict[str, Any]:
    """The contract's error: 400, {"error": {message, type, param, code}}, on the model."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    assert error["param"] == "model" and error["code"] == "model_not_supported"
    assert error["type"] == "invalid_request_error" and error["message"]
    return error


def test_models_lists_all_four_with_their_type(server: Server) -> None:
    ids = [m.id for m in _openai(server).models.list()]
    assert ids == ["chat-a", "chat-b", "embedder", "reranker"]
    cards = httpx.get(f"{server.base_url}/models", timeout=60).json()["data"]
    assert {m["id"]: m["type"] for m in cards} == {
        "chat-a": "chat", "chat-b": "chat", "embedder": "embedding", "reranker": "rerank"}
    assert {m["context_length"] for m in cards} == {512}


def test_both_chat_models_answer(server: Server) -> None:
    reply = _together(server).chat.completions.create(
        model="chat-a", messages=USER, max_tokens=8, temperature=0)
    assert reply.model == "chat-a" and reply.choices[0].message.content
    other = _openai(server).chat.completions.create(
        model="chat-b", messages=USER, max_tokens=8, temperature=0)
    assert other.model == "chat-b" and other.choices[0].message.content
    assert other.usage is not None and other.usage.completion_tokens <= 8


def test_the_embedder_embeds_through_both_sdks(server: Server) -> None:
    tog = _together(server).embeddings.create(model="embedder", input=SENTENCES)
    assert [d.index for d in tog.data] == [0, 1]
    size = len(tog.data[0].embedding)
    assert size > 0 and len(tog.data[1].embedding) == size
    oai = _openai(server).embeddings.create(model="embedder", input=SENTENCES)
    assert [len(d.embedding) for d in oai.data] == [size, size]
    assert oai.data[0].embedding == pytest.approx(tog.data[0].embedding, abs=2e-4)


def test_the_reranker_ranks(server: Server) -> None:
    ranked = _together(server).rerank.create(model="reranker", query=QUERY,
                                             documents=DOCUMENTS, top_n=2)
    assert len(ranked.results) == 2
    indices = [r.index for r in ranked.results]
    assert len(set(indices)) == 2 and all(0 <= i < len(DOCUMENTS) for i in indices)
    scores = [r.relevance_score for r in ranked.results]
    assert scores == sorted(scores, reverse=True)


def test_a_model_asked_for_another_task_is_a_400(server: Server) -> None:
    chat = httpx.post(f"{server.base_url}/chat/completions", timeout=600,
                      json={"model": "embedder", "messages": USER, "max_tokens": 4})
    assert "embeddings" in _refused(chat)["message"]
    embed = httpx.post(f"{server.base_url}/embeddings", timeout=600,
                       json={"model": "reranker", "input": "x"})
    assert "rerank" in _refused(embed)["message"]
    rerank = httpx.post(f"{server.base_url}/rerank", timeout=600,
                        json={"model": "embedder", "query": QUERY, "documents": DOCUMENTS})
    _refused(rerank)
    with pytest.raises(openai.BadRequestError):  # what an SDK user sees
        _openai(server).chat.completions.create(
            model="reranker", messages=USER, max_tokens=4)


# together 1.x (the SDK much code in the wild still pins) beside the 3.x the venv has: `make
# test` installs it into its own folder, and a child Python with that folder first runs the
# same calls. Its pydantic models validate every response, so a shape it rejects fails here.
TOGETHER_1 = Path(sys.prefix) / "together1"
TOGETHER_1_CALLS = """
import json, sys
from together import Together
args = json.loads(sys.argv[1])
user, sentences, query, documents = (args[k] for k in ("user", "sentences", "query", "documents"))
client = Together()
out = {"version": __import__("importlib.metadata").metadata.version("together")}
out["models"] = sorted((m.id, m.type) for m in client.models.list())
chat = client.chat.completions.create(model="chat-a", messages=user, max_tokens=8,
                                      temperature=0)
out["chat"] = chat.choices[0].message.content
out["stream"] = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="chat-b", messages=user, max_tokens=8, temperature=0, stream=True))
emb = client.embeddings.create(model="embedder", input=sentences)
out["embeddings"] = [len(d.embedding) for d in emb.data]
ranked = client.rerank.create(model="reranker", query=query, documents=documents,
                              top_n=2)
out["rerank"] = [(r.index, r.relevance_score) for r in ranked.results]
try:
    client.chat.completions.create(model="embedder", messages=user, max_tokens=4)
except Exception as exc:
    out["refused"] = [type(exc).__name__, getattr(exc, "http_status", None)]
print(json.dumps(out))
"""


@require_folder(TOGETHER_1, "together 1.x")
def test_together_1x_runs_the_same_calls(server: Server) -> None:
    env = {**os.environ, "PYTHONPATH": str(TOGETHER_1), "TOGETHER_BASE_URL": server.base_url,
           "TOGETHER_API_KEY": "local", "TOGETHER_NO_BANNER": "1"}
    args = json.dumps({"user": USER, "sentences": SENTENCES, "query": QUERY,
                       "documents": DOCUMENTS})
    done = subprocess.run([sys.executable, "-c", TOGETHER_1_CALLS, args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["version"].startswith("1.")
    assert out["models"] == [["chat-a", "chat"], ["chat-b", "chat"], ["embedder", "embedding"],
                             ["reranker", "rerank"]]
    assert out["chat"] and out["stream"]
    assert len(out["embeddings"]) == 2 and out["embeddings"][0] == out["embeddings"][1] > 0
    scores = [score for _, score in out["rerank"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert out["refused"][1] == 400, out["refused"]
