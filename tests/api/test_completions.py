"""POST /v1/completions on the scripted engine: the ``object`` each SDK's types declare, checked
with that SDK's own models in strict mode (PROTOCOL.md, "Legacy completions")."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import together
from openai.types import Completion as OpenAICompletion
from together.types import Completion as TogetherCompletion

from tests.conftest import MODEL, Server

PROMPT = "Once upon a time"


def _stream(server: Server, user_agent: str, **body: Any) -> list[dict[str, Any]]:
    payload = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "stream": True, **body}
    with httpx.stream("POST", f"{server.base_url}/completions", json=payload,
                      headers={"User-Agent": user_agent}) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_openai_sdk_validates_strictly(fake_server: Server) -> None:
    client = openai.OpenAI(base_url=fake_server.base_url, api_key="x", max_retries=0)
    raw = client.completions.with_raw_response.create(model=MODEL, prompt=PROMPT, max_tokens=4)
    completion = OpenAICompletion.model_validate(raw.http_response.json(), strict=True)
    assert completion.object == "text_completion"
    assert completion.choices[0].text and completion.choices[0].finish_reason == "length"

    # openai's stream yields the same Completion model, object included.
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4,
                                            stream=True))
    assert chunks and all(c.object == "text_completion" for c in chunks)
    # Only the finishing chunk has the non-null finish_reason that the model requires.
    OpenAICompletion.model_validate(chunks[-1].to_dict(), strict=True)


def test_together_sdk_gets_together_names(fake_server: Server) -> None:
    client = together.Together(base_url=fake_server.base_url, api_key="x", max_retries=0)
    raw = client.completions.with_raw_response.create(model=MODEL, prompt=PROMPT, max_tokens=4)
    assert raw.http_request.headers["User-Agent"].startswith("Together")
    completion = TogetherCompletion.model_validate(raw.http_response.json(), strict=True)
    assert completion.object == "text.completion"
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4,
                                            stream=True))
    assert chunks and all(c.object == "completion.chunk" for c in chunks)


@pytest.mark.parametrize(("user_agent", "whole", "chunk"), [
    ("Together/Python 3.1.1", "text.completion", "completion.chunk"),
    ("together/v1 PythonBindings/1.5.35", "text.completion", "completion.chunk"),
    ("OpenAI/Python 1.109.1", "text_completion", "text_completion"),
    ("curl/8.5.0", "text_completion", "text_completion"),
])
def test_object_names_follow_the_user_agent(fake_server: Server, user_agent: str, whole: str,
                                            chunk: str) -> None:
    r = httpx.post(f"{fake_server.base_url}/completions", headers={"User-Agent": user_agent},
                   json={"model": MODEL, "prompt": PROMPT, "max_tokens": 4})
    assert r.status_code == 200
    assert r.json()["object"] == whole
    chunks = _stream(fake_server, user_agent, stream_options={"include_usage": True})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert {c["object"] for c in chunks} == {chunk}
