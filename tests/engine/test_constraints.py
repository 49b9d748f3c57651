"""Constraints are backend-neutral values: equal (and cached alike) by their canonical form,
checkable without any backend, and built by the API without importing one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from insieme.engine.constraints import (
    Choice,
    JsonSchema,
    Regex,
    ToolCall,
    ToolFunction,
    check_schema,
)
from insieme.errors import InvalidRequestError

ROOT = Path(__file__).resolve().parents[2]


def test_a_schema_is_the_same_constraint_in_any_key_order() -> None:
    first = JsonSchema({"type": "object", "properties": {"a": {"type": "string"}}})
    again = JsonSchema({"properties": {"a": {"type": "string"}}, "type": "object"})
    assert first == again and hash(first) == hash(again)
    assert first != JsonSchema({"type": "object"})
    assert first != JsonSchema(first.schema, param="tools")  # a refusal would name another field


def test_tool_calls_differ_by_their_arguments_schemas() -> None:
    city = ToolFunction("f", {"type": "object", "properties": {"city": {"type": "string"}}})
    zone = ToolFunction("f", {"type": "object", "properties": {"zone": {"type": "string"}}})
    assert ToolCall((city,)) != ToolCall((zone,))
    assert ToolCall((city,)).canonical != ToolCall((zone,)).canonical
    assert ToolCall((city,)) == ToolCall((ToolFunction("f", dict(city.parameters)),))
    assert ToolCall((city,)) != ToolCall((city,), forced=False)


def test_choices_and_regexes_compare_by_value() -> None:
    assert Choice(("a", "b")) == Choice(("a", "b")) != Choice(("b", "a"))
    assert Regex("a+") == Regex("a+") != Regex("a+", param="x")


@pytest.mark.parametrize(("schema", "named"), [
    ({"type": "strnig"}, "invalid JSON schema"),
    ({"type": "object", "required": "name"}, "invalid JSON schema at required"),
    ([{"type": "object"}], "must be a JSON object"),
])
def test_check_schema_refuses_what_is_not_a_schema(schema: object, named: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        check_schema(schema, param="response_format.schema")
    assert refused.value.param == "response_format.schema"
    assert named in refused.value.message


def test_check_schema_accepts_keywords_only_some_backends_enforce() -> None:
    check_schema({"type": "integer", "minimum": 3}, param="p")  # a backend's call, not ours


@pytest.mark.parametrize("module", ["insieme/api/structured.py", "insieme/api/tools.py",
                                    "insieme/engine/constraints.py"])
def test_constraints_are_built_without_the_llama_backend(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert imported  # the walk saw the imports
    assert not [name for name in imported
                if name.startswith(("insieme.engine.llama", "llama_cpp"))], imported
