"""response_format on the scripted engine: each accepted form reaches the engine as a
backend-neutral constraint, and what is not a schema is a 400 that names the parameter. What a
backend cannot enforce of a valid schema it refuses itself (tests/engine/llama/test_grammar.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from insieme.api.schemas import JsonObjectFormat, JsonSchemaFormat
from insieme.api.structured import response_constraint
from insieme.config import LimitsConfig, ServerConfig
from insieme.engine.constraints import JsonObject, JsonSchema
from insieme.engine.fake import ALL_CAPABILITIES, FakeEngine
from insieme.engine.stream import RequestStream
from insieme.engine.types import GenerationRequest
from insieme.errors import InvalidRequestError
from tests.conftest import MODEL, InProcessServer, Server

USER = [{"role": "user", "content": "A person as JSON"}]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class RecordingEngine(FakeEngine):
    """The scripted engine (one that takes constraints), remembering the requests it was
    given."""

    def __init__(self) -> None:
        super().__init__('{"name": "Ada"}', capabilities=ALL_CAPABILITIES)
        self.requests: list[GenerationRequest] = []

    async def submit(self, request: GenerationRequest) -> RequestStream:
        self.requests.append(request)
        return await super().submit(request)


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
def test_schema_forms_become_the_same_constraint(
        recording: tuple[Server, RecordingEngine], response_format: dict[str, Any]) -> None:
    server, engine = recording
    response = httpx.post(f"{server.base_url}/chat/completions",
                          json={"model": MODEL, "messages": USER,
                                "response_format": response_format})
    assert response.status_code == 200, response.text
    constraint = engine.requests[-1].sampling.constraint
    assert isinstance(constraint, JsonSchema) and constraint.schema == PERSON
    assert constraint.param.startswith("response_format.")


def test_json_object_and_text(recording: tuple[Server, RecordingEngine]) -> None:
    server, engine = recording
    for response_format, expected in (({"type": "json_object"}, JsonObject()),
                                      ({"type": "text"}, None), (None, None)):
        httpx.post(f"{server.base_url}/chat/completions",
                   json={"model": MODEL, "messages": USER, "response_format": response_format})
        assert engine.requests[-1].sampling.constraint == expected


@pytest.mark.parametrize(("response_format", "param", "named"), [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strnig"}}},
     "response_format.json_schema.schema", "strnig"),
    ({"type": "json_object", "schema": ["not", "a", "schema"]}, "response_format.schema",
     "dictionary"),
    ({"type": "json_schema", "json_schema": "person"}, "response_format.json_schema",
     "json_schema"),
    ({"type": "regex", "pattern": "a+"}, "response_format", "regex"),
])
def test_bad_response_formats(fake_server: Server, response_format: dict[str, Any], param: str,
                              named: str) -> None:
    response = httpx.post(f"{fake_server.base_url}/chat/completions",
                          json={"model": MODEL, "messages": USER,
                                "response_format": response_format})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and named in error["message"]


def test_the_schema_is_checked_and_kept_as_sent() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer", "maximum": 150}}}
    constraint = response_constraint(JsonSchemaFormat.model_validate(
        {"type": "json_schema", "json_schema": {"schema": schema}}))
    # Valid JSON Schema: whether ``maximum`` can be enforced is the engine's to say.
    assert constraint == JsonSchema(schema, param="response_format.json_schema.schema")
    big = {"enum": [f"value {i}" for i in range(300)]}
    with pytest.raises(InvalidRequestError) as refused:
        response_constraint(JsonObjectFormat.model_validate({"type": "json_object", "schema": big}),
                            LimitsConfig(max_schema_bytes=1000))
    assert refused.value.code == "schema_too_large"
    assert refused.value.param == "response_format.schema"
