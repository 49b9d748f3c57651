"""Logprobs on the real model, in both dialects and through both SDKs: every value is a log
probability, top lists are sorted and agree with the sampled token, echo scores the prompt
the way generation scores the same text, and logit_bias moves the choice."""

from __future__ import annotations

import math

import openai
import pytest
import together

from tests.conftest import MODEL, Server

pytestmark = pytest.mark.model

ASK = [{"role": "user", "content": "Name a fruit."}]


def _openai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def _check_top(sampled: float, token: str, top: list[tuple[str, float]], k: int) -> None:
    assert sampled <= 0 and len(top) == k
    values = [lp for _, lp in top]
    assert all(lp <= 0 for lp in values) and values == sorted(values, reverse=True)
    assert math.fsum(math.exp(lp) for lp in values) <= 1 + 1e-4
    if token in dict(top):  # the sampled token's entry is the same number
        assert dict(top)[token] == sampled


def test_openai_dialect_chat(real_server: Server) -> None:
    client = _openai(real_server)
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12,  # type: ignore[arg-type]
                                           temperature=1.0, seed=5, logprobs=True,
                                           top_logprobs=5)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and "".join(e.token for e in content) == reply.choices[0].message.content
    for entry in content:
        _check_top(entry.logprob, entry.token,
                   [(t.token, t.logprob) for t in entry.top_logprobs], 5)
    stream = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6,  # type: ignore[arg-type]
                                            temperature=0, logprobs=True, top_logprobs=2,
                                            stream=True)
    entries = [e for c in stream if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content or []]
    assert len(entries) == 6
    for entry in entries:  # greedy: the sampled token is the most likely one
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == entry.logprob


def test_together_dialect_chat(real_server: Server) -> None:
    client = together.Together(base_url=real_server.base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8,  # type: ignore[arg-type]
                                           temperature=0, logprobs=3)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].message.content  # type: ignore[union-attr]
    tops: list[dict[str, float]] = logprobs.top_logprobs  # type: ignore[assignment]
    for token, sampled, top in zip(logprobs.tokens, logprobs.token_logprobs, tops, strict=True):
        _check_top(sampled, token, list(top.items()), 3)
    chunks = [c for c in client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=8, temperature=0, logprobs=3,  # type: ignore[arg-type]
        stream=True) if c.choices and c.choices[0].logprobs is not None]
    assert [c.choices[0].logprobs for c in chunks] == pytest.approx(logprobs.token_logprobs)
    for chunk in chunks:
        assert chunk.choices[0].top_logprobs and len(chunk.choices[0].top_logprobs) == 3


def test_echo_scores_the_prompt_like_generation_does(real_server: Server) -> None:
    client = _openai(real_server)
    prompt = "The capital of France is"
    generated = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1,
                                          temperature=0, logprobs=1)
    token = generated.choices[0].logprobs.tokens[0]  # type: ignore[union-attr,index]
    logprob = generated.choices[0].logprobs.token_logprobs[0]  # type: ignore[union-attr,index]
    echoed = client.completions.create(model=MODEL, prompt=prompt + token, max_tokens=1,
                                       temperature=0, logprobs=2, echo=True)
    lp = echoed.choices[0].logprobs
    assert lp is not None and echoed.choices[0].text.startswith(prompt + token)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # type: ignore[index]
    assert lp.text_offset[:2] == [0, len(lp.tokens[0])]  # type: ignore[index]
    # The scored prompt's last token is the one generation chose, with the same logprob
    # (two contexts, two batch shapes: equal up to float rounding).
    assert lp.tokens[-2] == token  # type: ignore[index]
    assert lp.token_logprobs[-2] == pytest.approx(logprob, abs=2e-3)  # type: ignore[index]
    assert all(x <= 0 for x in lp.token_logprobs[1:])  # type: ignore[index,operator]


def test_logit_bias_moves_the_choice(real_server: Server) -> None:
    client = _openai(real_server)
    plain = client.completions.create(model=MODEL, prompt="One, two,", max_tokens=1,
                                      temperature=0, logprobs=1)
    first = plain.choices[0].logprobs.token_ids[0]  # type: ignore[union-attr,attr-defined]
    banned = client.completions.create(model=MODEL, prompt="One, two,", max_tokens=1,
                                       temperature=0, logprobs=1,
                                       logit_bias={str(first): -100})
    assert banned.choices[0].logprobs.token_ids[0] != first  # type: ignore[union-attr,attr-defined]
    forced = client.completions.create(model=MODEL, prompt="One, two,", max_tokens=1,
                                       temperature=0, logit_bias={"330": 100})
    assert forced.choices[0].text == " A"  # token 330 (the seed's chunk shows it)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="x", logit_bias={"49152": 1})
    assert bad.value.body["param"] == "logit_bias"  # type: ignore[index]
