"""Logprobs in both dialects, echo and logit_bias on the scripted engine: the wire shapes each
SDK reads (see PROTOCOL.md), and the bad values refused by name."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import together

from tests.conftest import MODEL, Server

USER = [{"role": "user", "content": "hi"}]


def _stream(server: Server, route: str, **body: Any) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{server.base_url}/{route}",
                      json={"model": MODEL, "stream": True, **body}) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_openai_dialect_whole_chat(fake_server: Server) -> None:
    client = openai.OpenAI(base_url=fake_server.base_url, api_key="x", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=USER,  # type: ignore[arg-type]
                                           logprobs=True, top_logprobs=3, max_tokens=5)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 5
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == entry.logprob


def test_together_dialect_whole_and_streamed(fake_server: Server) -> None:
    client = together.Together(base_url=fake_server.base_url, api_key="x", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=USER,  # type: ignore[arg-type]
                                           logprobs=2, max_tokens=4)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and len(logprobs.tokens or []) == 4
    assert all(lp <= 0 for lp in logprobs.token_logprobs or [])
    chunks = _stream(fake_server, "chat/completions", messages=USER, logprobs=2, max_tokens=4)
    tokens = [c for c in chunks if c["token"] is not None]
    for chunk in tokens:
        choice = chunk["choices"][0]
        assert isinstance(choice["logprobs"], float)
        assert choice["logprobs"] == chunk["token"]["logprob"]
        assert len(choice["top_logprobs"]) == 2
    streamed = list(client.chat.completions.create(model=MODEL, messages=USER,  # type: ignore[arg-type]
                                                   logprobs=1, max_tokens=3, stream=True))
    values = [c.choices[0].logprobs for c in streamed if c.choices and c.choices[0].logprobs]
    assert len(values) == 3 and all(isinstance(v, float) and v <= 0 for v in values)


def test_openai_dialect_streamed(fake_server: Server) -> None:
    client = openai.OpenAI(base_url=fake_server.base_url, api_key="x", max_retries=0)
    stream = client.chat.completions.create(model=MODEL, messages=USER,  # type: ignore[arg-type]
                                            logprobs=True, top_logprobs=2, max_tokens=3,
                                            stream=True)
    entries = [e for c in stream if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content or []]
    assert len(entries) == 3 and all(len(e.top_logprobs) == 2 for e in entries)


def test_no_logprobs_unless_asked(fake_server: Server) -> None:
    reply = httpx.post(f"{fake_server.base_url}/chat/completions",
                       json={"model": MODEL, "messages": USER, "max_tokens": 2}).json()
    assert reply["choices"][0]["logprobs"] is None
    chunks = _stream(fake_server, "completions", prompt="x", max_tokens=2)
    assert all(c["choices"][0]["logprobs"] is None for c in chunks)


def test_completion_echo_openai_and_together(fake_server: Server) -> None:
    body = {"model": MODEL, "prompt": "abc", "echo": True, "logprobs": 1, "max_tokens": 2}
    url = f"{fake_server.base_url}/completions"
    openai_style = httpx.post(url, json=body).json()
    choice = openai_style["choices"][0]
    assert choice["text"].startswith("abc")
    lp = choice["logprobs"]
    assert lp["tokens"][:3] == ["a", "b", "c"] and lp["token_logprobs"][0] is None
    assert all(x <= 0 for x in lp["token_logprobs"][1:])
    assert lp["text_offset"][:4] == [0, 1, 2, 3]
    assert openai_style["prompt"][0]["text"] == "abc"
    together_style = httpx.post(url, json=body, headers={"User-Agent": "Together/Python 2.42"})
    tchoice = together_style.json()["choices"][0]
    assert not tchoice["text"].startswith("abc") and len(tchoice["logprobs"]["tokens"]) == 2
    assert together_style.json()["prompt"][0]["logprobs"]["tokens"] == ["a", "b", "c"]
    chunks = _stream(fake_server, "completions", prompt="abc", echo=True, max_tokens=2)
    assert chunks[0]["choices"][0]["text"].startswith("abc")


def test_together_sdk_reads_completion_logprobs(fake_server: Server) -> None:
    client = together.Together(base_url=fake_server.base_url, api_key="x", max_retries=0)
    reply = client.completions.create(model=MODEL, prompt="abc", logprobs=1, max_tokens=3,
                                      echo=True)
    assert reply.prompt[0].text == "abc"
    assert reply.choices[0].logprobs is not None
    assert len(reply.choices[0].logprobs.token_logprobs or []) == 3


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": 21}, "logprobs"),
    ({"logit_bias": {"1114112": 5}}, "logit_bias"),  # the fake's vocabulary ends at 0x10FFFF
    ({"logit_bias": {"-1": 5}}, "logit_bias"),
    ({"logit_bias": {"abc": 5}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
])
def test_bad_logprob_and_bias_values(fake_server: Server, extra: dict[str, Any],
                                     param: str) -> None:
    routes = (("chat/completions", {"messages": USER}), ("completions", {"prompt": "x"}))
    for route, prompt in routes:
        response = httpx.post(f"{fake_server.base_url}/{route}",
                              json={"model": MODEL, **prompt, **extra})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param


def test_logit_bias_in_range_is_accepted(fake_server: Server) -> None:
    response = httpx.post(f"{fake_server.base_url}/completions",
                          json={"model": MODEL, "prompt": "x", "logit_bias": {"65": -100}})
    assert response.status_code == 200


def test_chat_echo_returns_the_rendered_prompt(fake_server: Server) -> None:
    reply = httpx.post(f"{fake_server.base_url}/chat/completions", json={
        "model": MODEL, "messages": USER, "echo": True, "logprobs": 1, "max_tokens": 2}).json()
    prompt = reply["prompt"][0]
    assert "hi" in prompt["text"] and prompt["text"].endswith("assistant\n")
    assert "".join(prompt["logprobs"]["tokens"]) == prompt["text"]
    assert prompt["logprobs"]["token_logprobs"][0] is None
