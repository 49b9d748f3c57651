"""POST /v1/embeddings and /v1/rerank on the fake engine: the response shapes Together's and
OpenAI's clients read, every bad input a 400 in the contract's shape, and the accounting."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from insieme.config import ServerConfig
from insieme.engine.fake import EMBEDDING_SIZE, FakeEngine
from insieme.engine.types import Capability
from insieme.ledger import usage_totals
from tests.api.test_errors import check_error
from tests.conftest import MODEL, InProcessServer, Server, read_metrics

DOCS = ["The cat sat on the mat.", "Paris is the capital of France.", "Bread needs flour."]


@pytest.fixture(scope="module")
def fake_server() -> Iterator[Server]:
    """One server for the module (these tests change nothing in it)."""
    engine = FakeEngine()
    with InProcessServer(engine, ServerConfig()) as srv:
        yield Server(base_url=f"{srv.root}/v1", root=srv.root, engine=engine)


def _post(server: Server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body)


def test_embeddings_shape_float_and_base64(fake_server: Server) -> None:
    body = _post(fake_server, "/embeddings", {"model": MODEL, "input": DOCS}).json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == EMBEDDING_SIZE for v in vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-6) for v in vectors)
    assert body["usage"] == {"prompt_tokens": sum(map(len, DOCS)),
                             "total_tokens": sum(map(len, DOCS))}
    encoded = _post(fake_server, "/embeddings", {"model": MODEL, "input": DOCS[0],
                                                 "encoding_format": "base64"}).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    floats = struct.unpack(f"<{EMBEDDING_SIZE}f", raw)
    assert floats == pytest.approx(vectors[0], abs=1e-6)


def test_embeddings_token_ids_and_dimensions(fake_server: Server) -> None:
    ids = [ord(c) for c in DOCS[0]]
    as_ids = _post(fake_server, "/embeddings", {"model": MODEL, "input": ids}).json()
    as_text = _post(fake_server, "/embeddings", {"model": MODEL, "input": DOCS[0],
                                                 "dimensions": EMBEDDING_SIZE}).json()
    assert as_ids["data"][0]["embedding"] == as_text["data"][0]["embedding"]
    both = _post(fake_server, "/embeddings", {"model": MODEL, "input": [ids, ids]}).json()
    assert len(both["data"]) == 2


BAD_EMBEDDINGS = [
    ({"model": MODEL, "input": ""}, "input"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": ["ok", ""]}, "input"),
    ({"model": MODEL, "input": [1, "a"]}, "input"),
    ({"model": MODEL, "input": [[1], []]}, "input"),
    ({"model": MODEL, "input": {"text": "a"}}, "input"),
    ({"model": MODEL, "input": [-1]}, "input"),
    ({"model": MODEL, "input": [0x110000]}, "input"),
    ({"model": MODEL, "input": ["a"] * 513}, "input"),
    ({"model": MODEL, "input": "x" * 3000}, "input"),  # past the fake's 2048 tokens
    ({"model": MODEL, "input": "a", "dimensions": 8}, "dimensions"),
    ({"model": MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"model": MODEL, "input": "a", "truncate_prompt_tokens": -2}, "truncate_prompt_tokens"),
    ({"input": "a"}, "model"),
]


@pytest.mark.parametrize(("body", "param"), BAD_EMBEDDINGS)
def test_bad_embeddings_are_400(fake_server: Server, body: dict, param: str) -> None:
    check_error(_post(fake_server, "/embeddings", body), 400, param)
    # ... and the server still answers.
    assert _post(fake_server, "/embeddings", {"model": MODEL, "input": "a"}).status_code == 200


def test_long_input_truncates_when_asked(fake_server: Server) -> None:
    body = {"model": MODEL, "input": "x" * 3000, "truncate_prompt_tokens": 100}
    response = _post(fake_server, "/embeddings", body).json()
    assert response["usage"]["prompt_tokens"] == 100


def test_unknown_model_is_404(fake_server: Server) -> None:
    error = check_error(_post(fake_server, "/embeddings", {"model": "nope", "input": "a"}),
                        404, "model")
    assert MODEL in error["message"]
    check_error(_post(fake_server, "/rerank", {"model": "nope", "query": "q",
                                               "documents": ["a"]}), 404, "model")


def test_rerank_sorted_with_top_n_and_documents(fake_server: Server) -> None:
    body = {"model": MODEL, "query": "capital of France", "documents": DOCS}
    plain = _post(fake_server, "/rerank", body).json()
    assert plain["object"] == "rerank" and plain["model"] == MODEL and plain["id"]
    scores = [r["relevance_score"] for r in plain["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in plain["results"]) == [0, 1, 2]
    assert plain["results"][0]["index"] == 1
    assert all("document" not in r for r in plain["results"])
    assert plain["usage"]["prompt_tokens"] > 0
    assert plain["usage"]["total_tokens"] == plain["usage"]["prompt_tokens"]
    top = _post(fake_server, "/rerank", {**body, "top_n": 1, "return_documents": True}).json()
    assert top["results"] == [{"index": 1, "relevance_score": scores[0],
                               "document": {"text": DOCS[1]}}]
    many = _post(fake_server, "/rerank", {**body, "top_n": 10}).json()
    assert len(many["results"]) == 3


def test_rerank_objects_rank_on_their_fields(fake_server: Server) -> None:
    documents = [{"title": "France", "text": "Bread needs flour."},
                 {"title": "Baking", "text": "Paris is the capital of France."}]
    body = {"model": MODEL, "query": "capital of France", "documents": documents,
            "return_documents": True}
    by_text = _post(fake_server, "/rerank", {**body, "rank_fields": ["text"]}).json()
    assert by_text["results"][0]["index"] == 1
    # Together returns an object document as its JSON in "text".
    assert by_text["results"][0]["document"] == {
        "text": '{"title":"Baking","text":"Paris is the capital of France."}'}
    by_title = _post(fake_server, "/rerank", {**body, "rank_fields": ["title"]}).json()
    assert by_title["results"][0]["index"] == 0


BAD_RERANK = [
    ({"query": "", "documents": ["a"]}, "query"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": "a"}, "documents"),
    ({"query": "q", "documents": [1]}, "documents.0"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": [{"text": "a"}], "rank_fields": ["title"]}, "documents.0"),
    ({"query": "q", "documents": [{}]}, "documents.0"),
    ({"query": "q", "documents": ["a"], "rank_fields": []}, "rank_fields"),
    ({"query": "q", "documents": ["a"] * 513}, "documents"),
    ({"query": 3, "documents": ["a"]}, "query"),
]


@pytest.mark.parametrize(("body", "param"), BAD_RERANK)
def test_bad_rerank_is_400(fake_server: Server, body: dict, param: str) -> None:
    check_error(_post(fake_server, "/rerank", {"model": MODEL, **body}), 400, param)


@pytest.fixture
def plain_server() -> Iterator[Server]:
    engine = FakeEngine(capabilities=frozenset({Capability.TOOLS}))
    with InProcessServer(engine, ServerConfig()) as srv:
        yield Server(base_url=f"{srv.root}/v1", root=srv.root, engine=engine)


def test_a_model_without_the_capability_is_400_naming_it(plain_server: Server) -> None:
    server = plain_server
    error = check_error(_post(server, "/embeddings", {"model": MODEL, "input": "a"}),
                        400, "model")
    assert MODEL in error["message"] and error["code"] == "model_not_supported"
    error = check_error(_post(server, "/rerank", {"model": MODEL, "query": "q",
                                                  "documents": ["a"]}), 400, "model")
    assert MODEL in error["message"]


def test_usage_reaches_the_ledger_and_metrics(tmp_path: Path) -> None:
    engine = FakeEngine()
    ledger = tmp_path / "usage.sqlite3"
    with InProcessServer(engine, ServerConfig(usage_db=str(ledger))) as srv:
        base = f"{srv.root}/v1"
        embedded = httpx.post(f"{base}/embeddings", json={"model": MODEL, "input": DOCS})
        ranked = httpx.post(f"{base}/rerank", json={"model": MODEL, "query": "cat",
                                                    "documents": DOCS})
        metrics = read_metrics(srv.root)
    used = embedded.json()["usage"]["prompt_tokens"] + ranked.json()["usage"]["prompt_tokens"]
    assert metrics["insieme:prompt_tokens_total"] == used
    assert metrics["insieme:prefix_cache_queries_total"] == 0
    [totals] = usage_totals(ledger)
    assert totals.requests == 2 and totals.prompt_tokens == used
