"""Embeddings and rerank scores, on every backend that offers them (``Capability``)."""

from __future__ import annotations

import math

import pytest

from insieme.engine.base import Engine
from insieme.engine.types import Capability
from insieme.errors import InvalidRequestError

pytestmark = pytest.mark.asyncio(loop_scope="package")

SENTENCE = "The cat is sleeping on the sofa in the living room."
PARAPHRASE = "A cat sleeps on the couch in the lounge."
UNRELATED = "Quarterly tax filings are due at the end of April."


def _needs(engine: Engine, capability: Capability) -> None:
    if capability not in engine.info.capabilities:
        pytest.skip(f"this backend does not offer {capability}")


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


async def test_same_text_same_vector_alone_and_in_a_batch(engine: Engine) -> None:
    _needs(engine, Capability.EMBEDDINGS)
    alone = await engine.embed([SENTENCE])
    batch = await engine.embed([UNRELATED, SENTENCE, PARAPHRASE, SENTENCE])
    [vector] = alone.vectors
    assert len(vector) == engine.info.embedding_size
    assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-4)  # normalised
    for other in (batch.vectors[1], batch.vectors[3]):
        assert other == pytest.approx(vector, abs=2e-4)
    assert 0 < alone.prompt_tokens < batch.prompt_tokens


async def test_a_paraphrase_is_closer_than_an_unrelated_sentence(engine: Engine) -> None:
    _needs(engine, Capability.EMBEDDINGS)
    sentence, paraphrase, unrelated = (await engine.embed(
        [SENTENCE, PARAPHRASE, UNRELATED])).vectors
    assert _cosine(sentence, paraphrase) > _cosine(sentence, unrelated)


async def test_token_ids_embed_as_their_text(engine: Engine) -> None:
    _needs(engine, Capability.EMBEDDINGS)
    ids = await engine.tokenize(SENTENCE, add_special=False)
    by_text, by_ids = (await engine.embed([SENTENCE, ids])).vectors
    assert by_ids == pytest.approx(by_text, abs=2e-4)


async def test_too_long_is_refused_unless_truncated(engine: Engine) -> None:
    _needs(engine, Capability.EMBEDDINGS)
    long = "word " * (engine.info.max_model_len * 2)
    with pytest.raises(InvalidRequestError) as refused:
        await engine.embed([long])
    assert refused.value.param == "input"
    cut = await engine.embed([long], truncate=-1)
    assert cut.prompt_tokens <= engine.info.max_model_len
    short = await engine.embed([long], truncate=8)
    assert short.prompt_tokens <= 8


async def test_rerank_puts_the_answer_first(engine: Engine) -> None:
    _needs(engine, Capability.RERANK)
    documents = ["Bananas are a good source of potassium.",
                 "Paris is the capital and largest city of France.",
                 "The Great Wall of China is thousands of kilometres long."]
    scored = await engine.rerank("What is the capital of France?", documents)
    assert len(scored.scores) == 3
    assert all(0.0 <= s <= 1.0 for s in scored.scores)
    assert max(range(3), key=lambda i: scored.scores[i]) == 1
    assert scored.prompt_tokens > 0


async def test_rerank_cuts_a_document_too_long(engine: Engine) -> None:
    _needs(engine, Capability.RERANK)
    long = "Paris is the capital of France. " * engine.info.max_model_len
    scored = await engine.rerank("What is the capital of France?", [long, "Hello."])
    assert len(scored.scores) == 2
    assert scored.prompt_tokens <= 2 * engine.info.max_model_len
