"""JSON schemas to grammars (``compile_constraint`` of a ``JsonSchema``): what is enforced,
what is refused by name, and that every grammar is one llama.cpp's parser accepts."""

from __future__ import annotations

from typing import Any

import pytest

from insieme.engine.constraints import JsonSchema
from insieme.engine.llama.grammar import (
    MAX_GRAMMAR_BYTES,
    compile_constraint,
    grammar_parses,
    json_schema_grammar,
    rename_root,
)
from insieme.errors import InvalidRequestError


def schema_grammar(schema: Any, param: str) -> str:
    grammar = compile_constraint(JsonSchema(schema, param=param), max_bytes=MAX_GRAMMAR_BYTES)
    assert grammar is not None
    return grammar

ACCEPTED: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                      "age": {"type": "integer"}}, "required": ["name"]},
    {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 3},
    {"$defs": {"Node": {"type": "object", "properties": {
        "value": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 2}},
        "required": ["value"]}}, "$ref": "#/$defs/Node"},
    {"type": ["string", "null"], "maxLength": 5},
    {"anyOf": [{"type": "boolean"}, {"type": "object", "properties": {"x": {"const": 1}}}]},
    {"type": "object", "additionalProperties": {"type": "number"}},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "items": False},
    {"type": "string", "format": "date-time"},
    {"type": "object", "properties": {"anything": {}, "also": True}},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}}],
     "description": "one-element allOf"},
]

REFUSED: list[tuple[Any, str]] = [
    ({"type": "integer", "minimum": 3}, "minimum"),
    ({"type": "string", "pattern": "^a+$"}, "pattern"),
    ({"type": "string", "format": "email"}, "email"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {}, "required": ["a"]}, "required"),
    ({"$ref": "https://example.com/schema.json"}, "local"),
    ({"type": "string", "maxLength": 5000}, "maxLength"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"allOf": [{"type": "object"}, {"type": "object"}]}, "allOf"),
    ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "not"),
    ({"type": "strnig"}, "invalid JSON schema"),
    ({"type": "object", "required": "name"}, "invalid JSON schema"),
    ([{"type": "object"}], "must be a JSON object"),
    ({"enum": [1, 2], "type": "string"}, "enum"),
]


@pytest.mark.parametrize("schema", ACCEPTED)
def test_supported_schemas_become_grammars(schema: dict[str, Any]) -> None:
    grammar = schema_grammar(schema, "response_format")
    assert grammar_parses(grammar)
    assert any(line.startswith("root ::=") for line in grammar.splitlines())


@pytest.mark.parametrize(("schema", "named"), REFUSED)
def test_unenforceable_schemas_are_refused_by_name(schema: Any, named: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        schema_grammar(schema, "response_format.json_schema.schema")
    assert refused.value.param == "response_format.json_schema.schema"
    assert named in refused.value.message


def test_strings_cannot_hold_raw_control_characters() -> None:
    # The converter's own ``char`` rule lets a raw newline into a JSON string, which no JSON
    # parser accepts: the grammar must not.
    grammar = schema_grammar({"type": "string"}, "p")
    char_rule = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert "\\x00-\\x1F" in char_rule


def test_enum_keeps_only_values_of_the_declared_type() -> None:
    grammar = schema_grammar({"type": ["string", "null"], "enum": ["x", None, 3]}, "p")
    root = next(line for line in grammar.splitlines() if line.startswith("root ::="))
    assert '"\\"x\\""' in root and '"null"' in root and "3" not in root


def test_rename_root_embeds_a_grammar() -> None:
    grammar = rename_root(schema_grammar({"type": "boolean"}, "p"), "inner")
    assert not grammar_parses(grammar)  # no root rule any more
    assert grammar_parses(f'{grammar}\nroot ::= "<" inner ">"')


def test_json_schema_grammar_is_the_schema_constraint_s_grammar() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    assert json_schema_grammar(schema, param="p") == schema_grammar(schema, "p")
    with pytest.raises(InvalidRequestError) as refused:
        json_schema_grammar({"type": "object", "default": {1, 2}}, param="p")
    assert refused.value.param == "p" and "not JSON" in refused.value.message
