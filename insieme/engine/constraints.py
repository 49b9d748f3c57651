"""What a request may require of its output, said once for every backend.

The API layer builds one of these from ``response_format`` or ``tool_choice``; each backend
compiles it its own way (the llama.cpp backend to a GBNF grammar, vLLM to its structured-output
parameters). None of them is backend text. ``param`` names the request field a refusal
should point at (a 400 from the backend that cannot enforce part of it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from insieme.errors import InvalidRequestError


def canonical_json(value: Any) -> str:
    """One spelling per JSON value: the key a compiled constraint is cached under."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_schema(schema: Any, *, param: str) -> None:
    """A 400 naming ``param`` unless ``schema`` is a JSON Schema object (its meta-schema's).

    What any backend can check; what a backend can *enforce* of a valid schema is its own
    business (the llama.cpp backend refuses keywords its grammars cannot enforce)."""
    if not isinstance(schema, dict):
        raise InvalidRequestError("the schema must be a JSON object", param=param)
    validator = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise InvalidRequestError(
            f"invalid JSON schema{' at ' + where if where else ''}: {exc.message}", param=param
        ) from exc


@dataclass(frozen=True, slots=True)
class JsonSchema:
    """One JSON value, valid against ``schema``."""

    schema: dict[str, Any] = field(hash=False, compare=False)
    param: str = "response_format"
    canonical: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.canonical:
            object.__setattr__(self, "canonical", canonical_json(self.schema))


@dataclass(frozen=True, slots=True)
class JsonObject:
    """Any one JSON object."""

    param: str = "response_format"


@dataclass(frozen=True, slots=True)
class Regex:
    """Text (raw, not a JSON string) that ``pattern``, a regular expression in Python's
    ``re`` syntax, matches whole."""

    pattern: str
    param: str = "response_format"


@dataclass(frozen=True, slots=True)
class Choice:
    """Exactly one of ``options``, as raw text."""

    options: tuple[str, ...]
    param: str = "response_format"


@dataclass(frozen=True, slots=True)
class ToolFunction:
    """A function the model may call, with the JSON schema of its arguments; ``param``
    names the request field a refusal of that schema points at."""

    name: str
    parameters: dict[str, Any] = field(hash=False, compare=False)
    param: str = "tools"
    canonical: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.canonical:
            object.__setattr__(self, "canonical", canonical_json(self.parameters))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call to one of ``functions``: ``prefix``, then ``{"name": ..., "arguments": {...}}``
    with arguments valid for that function, then ``suffix``. ``forced``: the reply must be
    such a call (tool_choice "required" or a named function); otherwise the model may also
    answer in text, and a backend that cannot constrain only the call leaves it free."""

    functions: tuple[ToolFunction, ...]
    forced: bool = True
    prefix: str = "<tool_call>\n"
    suffix: str = "\n</tool_call>"
    param: str = "tools"

    @property
    def canonical(self) -> str:
        return canonical_json([self.prefix, self.suffix, self.forced,
                               [[f.name, f.param, f.canonical] for f in self.functions]])


Constraint = JsonSchema | JsonObject | Regex | Choice | ToolCall
