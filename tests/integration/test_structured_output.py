"""Structured output on the real model: whatever the seed, a JSON schema's output parses and
validates, through the official SDKs, streamed and not. The 135M model knows nothing of the
schemas; only the grammar stands between it and invalid JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import jsonschema
import openai
import pydantic
import pytest
import together

from tests.conftest import MODEL, Server

pytestmark = pytest.mark.model

# Bounded strings and arrays keep every output short enough to finish within max_tokens.
Name = {"type": "string", "maxLength": 24}
SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": {
        "type": "object",
        "properties": {
            "name": Name,
            "address": {"type": "object",
                        "properties": {"city": Name, "zip": {"type": "string", "maxLength": 8}},
                        "required": ["city"]},
        },
        "required": ["name", "address"],
    },
    "array": {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": Name, "minItems": 1, "maxItems": 3},
                       "scores": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
        "required": ["tags", "scores"],
    },
    "enum": {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]},
                       "size": {"type": "string", "enum": ["S", "M", "L"]},
                       "in_stock": {"type": "boolean"}},
        "required": ["colour", "size", "in_stock"],
        "additionalProperties": False,
    },
    "refs_and_nulls": {
        "$defs": {"Person": {"type": "object",
                             "properties": {"name": Name, "age": {"type": ["integer", "null"]}},
                             "required": ["name", "age"]}},
        "type": "object",
        "properties": {"people": {"type": "array", "items": {"$ref": "#/$defs/Person"},
                                  "maxItems": 2},
                       "note": {"anyOf": [Name, {"type": "null"}]}},
        "required": ["people"],
    },
}


def _openai(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


async def _sample(client: openai.AsyncOpenAI, name: str, seed: int) -> list[tuple[str, str]]:
    reply = await client.chat.completions.create(
        model=MODEL, n=2, seed=seed, temperature=1.0, max_tokens=160,
        messages=[{"role": "user", "content": f"Reply with a {name} JSON object."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}},
    )
    return [(c.finish_reason, c.message.content or "") for c in reply.choices]


def test_json_schemas_validate_across_seeds(real_server: Server) -> None:
    async def run_all() -> list[list[tuple[str, str]]]:
        client = _openai(real_server)
        try:  # all at once (16 sequences): the engine batches them
            return await asyncio.gather(*(_sample(client, name, seed)
                                          for name in SCHEMAS for seed in (1, 2)))
        finally:
            await client.close()

    results = asyncio.run(run_all())
    for (name, seed), choices in zip([(n, s) for n in SCHEMAS for s in (1, 2)], results,
                                     strict=True):
        for finish, content in choices:
            assert finish == "stop", (name, seed, content)
            jsonschema.validate(json.loads(content), SCHEMAS[name])
    # Different seeds and choices really sample different outputs.
    assert len({content for choices in results for _, content in choices}) > len(results)


def test_json_object_parses_streamed_and_not(real_server: Server) -> None:
    client = together.Together(base_url=real_server.base_url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Give the name and age of a cat as JSON."}]
    reply = client.chat.completions.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                           response_format={"type": "json_object"},
                                           max_tokens=120, temperature=0)
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)  # type: ignore[union-attr,arg-type]
    # Together's older form, streamed: a schema beside type json_object.
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=120, temperature=0.9, seed=7, stream=True,  # type: ignore[arg-type]
        response_format={"type": "json_object", "schema": SCHEMAS["enum"]})  # type: ignore[typeddict-unknown-key]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMAS["enum"])


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    kind: Literal["cat", "dog", "fish"]
    age: int


def test_openai_parse_helper_gets_a_model(real_server: Server) -> None:
    # openai's parse() sends the model's strict JSON schema and validates the reply into it.
    client = openai.OpenAI(base_url=real_server.base_url, api_key="unused", max_retries=0)
    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Describe a pet."}],
        response_format=Pet, max_tokens=80, temperature=0)
    pet = completion.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.kind in ("cat", "dog", "fish")
