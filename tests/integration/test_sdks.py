"""The official SDKs, sync and async, streamed and not, against `insieme serve` on the
bundled model — what a user of Together or OpenAI runs."""

from __future__ import annotations

import httpx
import openai
import pytest
import together

from tests.conftest import MODEL, SEED_MODEL, Server

pytestmark = pytest.mark.model

MESSAGES = [{"role": "user", "content": "Name three colours."}]


def _together(server: Server) -> together.Together:
    return together.Together(base_url=server.base_url, api_key="unused", max_retries=0)


def _openai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_together_sync_stream(real_server: Server) -> None:
    client = _together(real_server)
    stream = client.chat.completions.create(model=SEED_MODEL, messages=MESSAGES, stream=True,
                                            max_tokens=24, temperature=0)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_together_sync_plain(real_server: Server) -> None:
    client = _together(real_server)
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16,
                                              temperature=0)
    assert response.choices[0].message.content
    assert response.usage.completion_tokens == 16
    assert response.choices[0].finish_reason == "length"


async def test_together_async_stream(real_server: Server) -> None:
    client = together.AsyncTogether(base_url=real_server.base_url, api_key="unused",
                                    max_retries=0)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                  max_tokens=12, temperature=0)
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces).strip()
    await client.close()


def test_together_completions_and_models(real_server: Server) -> None:
    client = _together(real_server)
    response = client.completions.create(model=MODEL, prompt="The capital of France is",
                                         max_tokens=8, temperature=0)
    assert response.choices[0].text
    assert response.choices[0].finish_reason == "length"
    # together 3.x lists models through its v2 project API; the v1 list that together 1.x/2.x
    # and together-ai read is a bare JSON list, chosen by their User-Agent.
    listed = httpx.get(f"{real_server.base_url}/models",
                       headers={"User-Agent": "Together/Python 2.42.0"}).json()
    assert [m["id"] for m in listed] == [MODEL, SEED_MODEL]
    assert listed[0]["pricing"]["input"] == 0


def test_openai_sync_stream_and_plain(real_server: Server) -> None:
    client = _openai(real_server)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                            max_tokens=16, temperature=0,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16,
                                           temperature=0)
    # Greedy: the streamed and the plain answer are the same text.
    assert plain.choices[0].message.content == streamed
    assert [m.id for m in client.models.list()] == [MODEL, SEED_MODEL]


def test_openai_stream_helper_keeps_one_role(real_server: Server) -> None:
    client = _openai(real_server)
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES, max_tokens=8,
                                        temperature=0) as stream:
        for _ in stream:
            pass
        snapshot = stream.current_completion_snapshot
    # A role repeated on every chunk would accumulate into "assistantassistant...".
    assert snapshot.choices[0].message.role == "assistant"
    assert snapshot.choices[0].message.content


async def test_openai_async(real_server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=real_server.base_url, api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                  max_tokens=8, temperature=0)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    completion = await client.completions.create(model=MODEL, prompt="Once upon a time",
                                                 max_tokens=8, temperature=0)
    assert completion.choices[0].text
    await client.close()


def test_openai_errors_are_typed(real_server: Server) -> None:
    client = _openai(real_server)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert MODEL in str(missing.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=-1)
