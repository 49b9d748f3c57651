"""Embeddings and rerank through the official SDKs against `insieme serve` on the bundled
model: what a retrieval-augmented app calls beside chat."""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest
import together

from tests.conftest import MODEL, Server

pytestmark = pytest.mark.model

SENTENCES = ["The cat is sleeping on the sofa in the living room.",
             "A cat sleeps on the couch in the lounge.",
             "Quarterly tax filings are due at the end of April."]
QUERY = "What is the capital of France?"
DOCUMENTS = ["Bananas are a good source of potassium.",
             "Paris is the capital and largest city of France.",
             "The Great Wall of China is thousands of kilometres long.",
             "Photosynthesis turns light into chemical energy in plants."]
SIZE = 576  # SmolLM2-135M's hidden size


def _together(server: Server) -> together.Together:
    return together.Together(base_url=server.base_url, api_key="unused", max_retries=0)


def _openai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


def test_together_embeddings_string_and_list(real_server: Server) -> None:
    client = _together(real_server)
    one = client.embeddings.create(model=MODEL, input=SENTENCES[0])
    assert len(one.data) == 1 and len(one.data[0].embedding) == SIZE
    many = client.embeddings.create(model=MODEL, input=SENTENCES)
    assert [d.index for d in many.data] == [0, 1, 2]
    vectors = [d.embedding for d in many.data]
    # The same text alone and in a batch: the same vector, to float tolerance.
    assert vectors[0] == pytest.approx(one.data[0].embedding, abs=2e-4)
    # A paraphrase is closer than an unrelated sentence.
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])


def test_openai_embeddings_float_and_base64(real_server: Server) -> None:
    client = _openai(real_server)
    floats = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    assert floats.usage.prompt_tokens > 0
    assert floats.usage.total_tokens == floats.usage.prompt_tokens
    # Left to itself the SDK asks for base64 and decodes it.
    decoded = client.embeddings.create(model=MODEL, input=SENTENCES)
    for plain, packed in zip(floats.data, decoded.data, strict=True):
        assert len(packed.embedding) == SIZE
        assert packed.embedding == pytest.approx(plain.embedding, abs=2e-4)
    ids = client.embeddings.create(model=MODEL, input=[[1, 2, 3, 4], [5, 6, 7]])
    assert len(ids.data) == 2
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=MODEL, input="x", dimensions=8)
    assert "dimensions" in str(refused.value)


def test_too_long_input_is_400_unless_truncated(real_server: Server) -> None:
    long = "word " * 3000
    response = httpx.post(f"{real_server.base_url}/embeddings",
                          json={"model": MODEL, "input": long}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    cut = httpx.post(f"{real_server.base_url}/embeddings",
                     json={"model": MODEL, "input": long, "truncate_prompt_tokens": 64},
                     timeout=60)
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 64


def _text(document: Any) -> str:
    return document["text"] if isinstance(document, dict) else document.text


def test_together_rerank(real_server: Server) -> None:
    client = _together(real_server)
    ranked = client.rerank.create(model=MODEL, query=QUERY, documents=DOCUMENTS)
    assert [r.index for r in ranked.results][0] == 1
    assert sorted(r.index for r in ranked.results) == [0, 1, 2, 3]
    scores = [r.relevance_score for r in ranked.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    top = client.rerank.create(model=MODEL, query=QUERY, documents=DOCUMENTS, top_n=2,
                               return_documents=True)
    assert len(top.results) == 2
    assert top.results[0].index == 1 and _text(top.results[0].document) == DOCUMENTS[1]
    assert top.results[0].relevance_score == pytest.approx(scores[0], abs=1e-5)
    assert top.usage.prompt_tokens > 0


def test_rerank_json_documents_by_field(real_server: Server) -> None:
    documents = [{"title": "Fruit", "text": DOCUMENTS[0]},
                 {"title": "Cities", "text": DOCUMENTS[1]}]
    ranked = _together(real_server).rerank.create(
        model=MODEL, query=QUERY, documents=documents, rank_fields=["text"],
        return_documents=True)
    assert ranked.results[0].index == 1
    assert DOCUMENTS[1] in _text(ranked.results[0].document)


def test_embeddings_beside_a_running_chat(real_server: Server) -> None:
    """The pooling context runs on its own thread beside the generation context: a greedy
    chat streamed while embeddings are computed says what it says alone."""
    client = _openai(real_server)
    messages = [{"role": "user", "content": "Name three colours."}]
    alone = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24,
                                           temperature=0).choices[0].message.content
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24,
                                            temperature=0, stream=True)
    pieces = []
    for n, chunk in enumerate(stream):
        if n in (1, 8):  # while it streams
            embedded = client.embeddings.create(model=MODEL, input=SENTENCES * 8,
                                                 encoding_format="float")
            assert len(embedded.data) == 24
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == alone
