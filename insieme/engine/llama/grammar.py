"""Constraints to llama.cpp grammars (GBNF): output that always parses, validates, matches.

``compile_constraint`` is the llama.cpp backend's side of ``insieme.engine.constraints``: one
GBNF grammar (start rule ``root``) per constraint, cached by its canonical form, so a client
that sends the same schema on every request (as SDKs do for a pydantic model) builds it once.

JSON schemas go through llama-cpp-python's ``SchemaConverter`` (its port of llama.cpp's own
json-schema-to-grammar). That converter silently ignores some keywords and mishandles a few
shapes; a grammar that ignored a constraint would let the model write JSON that parses but does
not validate. So the schema is first checked against its JSON Schema meta-schema, then
normalised into the shapes the converter gets right, and every keyword the grammar cannot
enforce is refused by name (a 400 for the client), never dropped.

Enforced: ``type`` (one or a list), ``properties``/``required``, ``additionalProperties``,
``items``/``prefixItems``/``minItems``/``maxItems``, ``enum``/``const``, ``anyOf``, ``oneOf``
(as ``anyOf``: its branches should exclude each other), one-element ``allOf``, local ``$ref``
(``$defs``/``definitions``, recursion included), ``minLength``/``maxLength`` and the formats
``date``, ``time``, ``date-time`` and ``uuid``.

Choices and regular expressions are written by ``gbnf`` (the converter's own pattern support
breaks on ``\\.``, ``\\d`` or a ``"`` in raw mode and refuses ``(?:``).
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any

import jsonschema
import llama_cpp as llama
from llama_cpp.llama_grammar import SchemaConverter

from insieme.engine.constraints import (
    Choice,
    Constraint,
    JsonObject,
    JsonSchema,
    Regex,
    ToolCall,
    check_schema,
)
from insieme.engine.llama.gbnf import (
    Unenforceable,
    alternatives,
    factor_alternatives,
    literal,
    regex_rule,
)
from insieme.errors import InvalidRequestError

# Keywords the grammar cannot enforce: refused, so output never silently breaks them.
UNSUPPORTED = (
    "pattern", "patternProperties", "propertyNames", "minProperties", "maxProperties",
    "dependentRequired", "dependentSchemas", "dependencies", "contains", "minContains",
    "maxContains", "unevaluatedProperties", "unevaluatedItems", "not", "if", "then", "else",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
)
FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
# Keywords that constrain a value; anything else is an annotation (or unknown) and ignored by
# JSON Schema validation as well.
_VALIDATION = {
    "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "prefixItems", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "format",
    "anyOf", "oneOf", "allOf", "$ref", *UNSUPPORTED,
}
_DEFS = ("$defs", "definitions")
_ANY_VALUE: dict[str, Any] = {"type": ["string", "number", "boolean", "null", "object", "array"]}
# The converter spells bounded repetitions as nested rules; past this they get slow to parse.
MAX_REPEAT = 1000

# JSON strings may not hold raw control characters, which the converter's ``char`` rule allows.
_CONVERTER_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x00-\\x1F] |'

JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}
_CALL_RULE = "insieme-tool-call"

# ``json_schema_grammar``'s bound, as ``EngineConfig.max_grammar_bytes``'s default.
MAX_GRAMMAR_BYTES = 256 * 1024


# What a grammar past --max-grammar-bytes was made of, and what would make it smaller.
_TOO_LARGE: dict[type, tuple[str, str]] = {
    JsonSchema: ("schema", "lower maxLength/maxItems or enum sizes"),
    Regex: ("regular expression", "lower repeat counts"),
    Choice: ("choice", "fewer or shorter options"),
}


class _Refused(Exception):
    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def compile_constraint(constraint: Constraint, *, max_bytes: int) -> str | None:
    """The GBNF grammar (start rule ``root``) that enforces ``constraint``; a 400 naming
    ``constraint.param`` for what it cannot enforce, or past ``max_bytes`` of grammar.

    None for a tool call that is not forced: the model may answer in text or call, and this
    backend leaves such a reply free (the calls are read back out of the text). Runs for
    milliseconds on a large schema: call it off the event loop.
    """
    grammar = _compiled(constraint)
    if grammar is not None and len(grammar) > max_bytes:
        what, hint = _TOO_LARGE.get(type(constraint), _TOO_LARGE[JsonSchema])
        raise InvalidRequestError(
            f"the {what}'s grammar would be {len(grammar)} bytes; this server builds at most "
            f"{max_bytes} (--max-grammar-bytes): {hint}",
            param=constraint.param, code="schema_too_large")
    return grammar


def json_schema_grammar(schema: Any, *, param: str,
                        max_bytes: int = MAX_GRAMMAR_BYTES) -> str:
    """The grammar of one JSON value valid against ``schema`` (``compile_constraint`` of a
    ``JsonSchema``)."""
    try:
        constraint = JsonSchema(schema, param=param)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the schema is not JSON: {exc}", param=param) from exc
    grammar = compile_constraint(constraint, max_bytes=max_bytes)
    assert grammar is not None
    return grammar


@lru_cache(maxsize=256)
def _compiled(constraint: Constraint) -> str | None:
    # Constraints compare (and hash) by kind, canonical form and param: the cache key.
    if isinstance(constraint, JsonSchema):
        return _build_grammar(constraint.schema, constraint.param)
    if isinstance(constraint, JsonObject):
        return _build_grammar(JSON_OBJECT_SCHEMA, constraint.param)
    if isinstance(constraint, Choice):
        if not constraint.options:
            raise InvalidRequestError("a choice needs at least one option",
                                      param=constraint.param)
        return _parsed(f"root ::= {alternatives(constraint.options)}", constraint.param)
    if isinstance(constraint, Regex):
        return _regex_grammar(constraint)
    return _tool_call_grammar(constraint) if constraint.forced else None


def _regex_grammar(regex: Regex) -> str:
    try:
        body = regex_rule(regex.pattern, max_repeat=MAX_REPEAT)
    except re.error as exc:
        raise InvalidRequestError(f"invalid regular expression: {exc}",
                                  param=regex.param) from exc
    except Unenforceable as exc:
        raise InvalidRequestError(f"in a regular expression, {exc}", param=regex.param) from None
    except RecursionError:
        raise InvalidRequestError("the regular expression nests too deeply",
                                  param=regex.param) from None
    return _parsed(f"root ::= {body}", regex.param)


def _tool_call_grammar(call: ToolCall) -> str:
    """``prefix``, one ``{"name": ..., "arguments": ...}`` object calling one of the
    functions with valid arguments, ``suffix``."""
    if not call.functions:
        raise InvalidRequestError("a tool call needs at least one function", param=call.param)
    branches: list[dict[str, Any]] = []
    defs: dict[str, dict[str, Any]] = {key: {} for key in _DEFS}
    for function in call.functions:
        _compiled(JsonSchema(function.parameters, param=function.param))  # refusals name it
        parameters = copy.deepcopy(function.parameters)
        for key in _DEFS:  # references are to the root: move definitions up to the call's
            for name, sub in parameters.pop(key, {}).items():
                if defs[key].setdefault(name, sub) != sub:
                    raise InvalidRequestError(f"tools define different '{key}/{name}'",
                                              param=function.param)
        branches.append({"type": "object",
                         "properties": {"name": {"const": function.name},
                                        "arguments": parameters},
                         "required": ["name", "arguments"]})
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    schema.update({key: entries for key, entries in defs.items() if entries})
    body = rename_root(_build_grammar(schema, call.param), _CALL_RULE)
    pieces = (literal(call.prefix) if call.prefix else "", _CALL_RULE,
              literal(call.suffix) if call.suffix else "")
    return f"{body}\nroot ::= " + " ".join(piece for piece in pieces if piece)


def _build_grammar(schema: Any, param: str) -> str:
    check_schema(schema, param=param)
    try:
        normal = _normalise(copy.deepcopy(schema), "")
    except _Refused as exc:
        where = f" (at {exc.path})" if exc.path else ""
        raise InvalidRequestError(f"{exc.message}{where}", param=param) from None
    if "$ref" in normal:
        # The converter does not look past a reference node, so the definitions beside a
        # root ``$ref`` would stay unresolved: a one-branch union is looked into.
        normal["anyOf"] = [{"$ref": normal.pop("$ref")}]
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False,
                                raw_pattern=False)
    try:
        converter.visit(converter.resolve_refs(normal, "input"), "")
        grammar = converter.format_grammar()
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequestError(f"the schema cannot be turned into a grammar: {exc}",
                                  param=param) from exc
    return _parsed(factor_alternatives(grammar.replace(_CONVERTER_CHAR, _JSON_CHAR)), param)


def _parsed(grammar: str, param: str) -> str:
    if not grammar_parses(grammar):
        raise InvalidRequestError("the constraint cannot be turned into a grammar", param=param)
    return grammar


def rename_root(grammar: str, name: str) -> str:
    """The same grammar with its start rule called ``name`` (to embed it in a larger one)."""
    return "\n".join(f"{name} ::=" + line[len("root ::="):] if line.startswith("root ::=")
                      else line for line in grammar.splitlines())


def grammar_parses(grammar: str) -> bool:
    """Whether llama.cpp's own parser accepts ``grammar`` (it needs no vocabulary)."""
    sampler = llama.llama_sampler_init_grammar(None, grammar.encode(), b"root")
    if not sampler:
        return False
    llama.llama_sampler_free(sampler)
    return True


def _normalise(schema: Any, path: str) -> dict[str, Any]:
    """``schema`` in the shapes the converter enforces exactly, or ``_Refused``."""
    if schema is True:
        return dict(_ANY_VALUE) if path else {}
    if schema is False:
        raise _Refused("a 'false' schema admits no value", path)
    assert isinstance(schema, dict)  # the meta-schema allows only objects and booleans
    defs = {key: schema.pop(key) for key in _DEFS if key in schema}
    result = _normalise_body(schema, path)
    for key, entries in defs.items():
        result[key] = {name: _normalise(sub, _join(path, key, name))
                       for name, sub in entries.items()}
    return result


def _normalise_body(schema: dict[str, Any], path: str) -> dict[str, Any]:
    _refuse_unenforceable(schema, path)
    siblings = set(schema) & _VALIDATION
    for combinator in ("$ref", "anyOf", "oneOf", "allOf"):
        if combinator in schema and len(siblings) > 1:
            others = ", ".join(sorted(siblings - {combinator}))
            raise _Refused(f"'{combinator}' beside other constraints ({others}) is not "
                           "supported: move them into its branches", path)
    if "$ref" in schema:
        return schema
    if "allOf" in schema:
        if len(schema["allOf"]) != 1:
            raise _Refused("'allOf' with more than one schema is not supported", path)
        return _normalise(schema["allOf"][0], _join(path, "allOf", 0))
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            schema[combinator] = [_normalise(s, _join(path, combinator, i))
                                  for i, s in enumerate(schema[combinator])]
            return schema
    if "enum" in schema or "const" in schema:
        return _constant_choice(schema, path)
    if not siblings:
        # No constraint: any value (the converter would insist on an object below the root).
        return dict(_ANY_VALUE) if path else schema
    kind = schema.get("type")
    if isinstance(kind, list):
        # The converter keeps only the names of a type list and drops every other keyword;
        # a union of full copies keeps them.
        rest = {k: v for k, v in schema.items() if k != "type"}
        return {"anyOf": [_normalise_body({**rest, "type": t}, path) for t in kind]}
    if kind is None and ("minLength" in schema or "maxLength" in schema):
        schema["type"] = kind = "string"
    _check_bounds(schema, path)
    _normalise_object(schema, path)
    _normalise_array(schema, kind, path)
    return schema


def _refuse_unenforceable(schema: dict[str, Any], path: str) -> None:
    for keyword in UNSUPPORTED:
        if keyword in schema:
            raise _Refused(f"the JSON schema keyword '{keyword}' is not supported", path)
    if schema.get("uniqueItems"):
        raise _Refused("the JSON schema keyword 'uniqueItems' is not supported", path)
    fmt = schema.get("format")
    if fmt is not None and fmt not in FORMATS and schema.get("type", "string") == "string":
        raise _Refused(f"the string format '{fmt}' is not supported "
                       f"(supported: {', '.join(FORMATS)})", path)
    ref = schema.get("$ref")
    if ref is not None and not ref.startswith("#/"):
        raise _Refused(f"only local references ('#/...') are supported, not '{ref}'", path)


def _constant_choice(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """``enum``/``const`` win over every sibling in the grammar: keep the values that fit them."""
    values = [schema["const"]] if "const" in schema else list(schema["enum"])
    rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
    if set(rest) & _VALIDATION:
        validator = jsonschema.Draft202012Validator(rest)
        try:
            values = [v for v in values if validator.is_valid(v)]
        except jsonschema.exceptions.SchemaError:
            pass
    if not values:
        raise _Refused("no value of 'enum'/'const' fits the other constraints", path)
    return {"enum": values}


def _normalise_object(schema: dict[str, Any], path: str) -> None:
    if "properties" in schema:
        props = schema["properties"]
        missing = [name for name in schema.get("required", []) if name not in props]
        if missing:
            raise _Refused(f"required properties {missing} are not in 'properties'", path)
        schema["properties"] = {name: _normalise(sub, _join(path, "properties", name))
                                for name, sub in props.items()}
        # Extra keys could repeat a declared one with a value of another type; leaving them
        # out keeps every output valid.
        schema.pop("additionalProperties", None)
    elif schema.get("required"):
        raise _Refused("'required' without 'properties' is not supported", path)
    elif schema.get("additionalProperties") is True:
        del schema["additionalProperties"]
    elif isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _normalise(schema["additionalProperties"],
                                                    _join(path, "additionalProperties"))


def _normalise_array(schema: dict[str, Any], kind: Any, path: str) -> None:
    items = schema.get("items")
    if "prefixItems" in schema or isinstance(items, list):
        if "prefixItems" in schema and items not in (None, False):
            raise _Refused("'prefixItems' with 'items' is not supported", path)
        if "minItems" in schema or "maxItems" in schema:
            raise _Refused("'minItems'/'maxItems' on a tuple are not supported", path)
        key = "prefixItems" if "prefixItems" in schema else "items"
        if key == "prefixItems":
            schema.pop("items", None)  # ``items: false`` adds nothing to an exact tuple
        schema[key] = [_normalise(s, _join(path, key, i)) for i, s in enumerate(schema[key])]
    elif items is not None:
        schema["items"] = _normalise(items, _join(path, "items"))
    elif kind == "array":
        schema["items"] = dict(_ANY_VALUE)


def _check_bounds(schema: dict[str, Any], path: str) -> None:
    for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
        lo, hi = schema.get(low, 0), schema.get(high)
        if hi is not None and lo > hi:
            raise _Refused(f"'{low}' is larger than '{high}': no value fits", path)
        if max(lo, hi or 0) > MAX_REPEAT:
            raise _Refused(f"'{low}'/'{high}' above {MAX_REPEAT} are not supported", path)


def _join(path: str, *parts: object) -> str:
    return ".".join([path, *map(str, parts)] if path else map(str, parts))
