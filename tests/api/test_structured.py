"""response_format on the scripted engine: each accepted form reaches the engine as a grammar,
and a schema the grammar cannot enforce is a 400 that names the parameter and the keyword."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from insieme.engine.stream import RequestStream
from insieme.engine.types import GenerationRequest
from tests.conftest import MODEL, InProcessServer, Server

USER = [{"role": "user", "content": "A person as JSON"}]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class RecordingEngine(FakeEngine):
    """The scripted engine, remembering the requests it was given."""

    def __init__(self) -> None:
        super().__init__('{"name": "Ada"}')
        self.requests: list[GenerationRequest] = []

    def submit(self, request: GenerationRequest) -> RequestStream:
        self.requests.append(request)
        return super().submit(request)


@pytest.fixture
def recording() -> Iterator[tuple[Server, RecordingEngine]]:
    engine = RecordingEngine()
    with InProcessServer(engine, ServerConfig()) as srv:
        yield Server(base_url=f"{srv.root}/v1", root=srv.root), engine


@pytest.mark.parametrize("response_format", [
    {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    {"type": "json_object", "schema": PERSON},  # Together's older form (together 1.x)
    {"type": "json_schema", "schema": PERSON},
])
def test_schema_forms_become_the_same_grammar(
        recording: tuple[Server, RecordingEngine], response_format: dict[str, Any]) -> None:
    server, engine = recording
    response = httpx.post(f"{server.base_url}/chat/completions",
                          json={"model": MODEL, "messages": USER,
                                "response_format": response_format})
    assert response.status_code == 200, response.text
    grammar = engine.requests[-1].sampling.grammar
    assert grammar is not None and '"\\"name\\""' in grammar


def test_json_object_and_text(recording: tuple[Server, RecordingEngine]) -> None:
    server, engine = recording
    for response_format, has_grammar in (({"type": "json_object"}, True),
                                         ({"type": "text"}, False), (None, False)):
        httpx.post(f"{server.base_url}/chat/completions",
                   json={"model": MODEL, "messages": USER, "response_format": response_format})
        assert (engine.requests[-1].sampling.grammar is not None) is has_grammar


@pytest.mark.parametrize(("response_format", "param", "named"), [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strnig"}}},
     "response_format.json_schema.schema", "strnig"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"age": {"type": "integer", "maximum": 150}}}}},
     "response_format.json_schema.schema", "maximum"),
    ({"type": "json_object", "schema": {"type": "string", "pattern": "^[a-z]+$"}},
     "response_format.schema", "pattern"),
    ({"type": "json_schema", "json_schema": "person"}, "response_format.json_schema",
     "json_schema"),
    ({"type": "regex", "pattern": "a+"}, "response_format.type", "regex"),
])
def test_bad_response_formats(fake_server: Server, response_format: dict[str, Any], param: str,
                              named: str) -> None:
    response = httpx.post(f"{fake_server.base_url}/chat/completions",
                          json={"model": MODEL, "messages": USER,
                                "response_format": response_format})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and named in error["message"]
