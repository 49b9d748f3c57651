"""JSON schemas to llama.cpp grammars (GBNF), for output that always parses and validates.

The conversion is llama-cpp-python's ``SchemaConverter`` (its port of llama.cpp's own
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
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

import jsonschema
import llama_cpp as llama
from llama_cpp.llama_grammar import SchemaConverter

from insieme.engine.gbnf import factor_alternatives
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


class _Refused(Exception):
    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def check_schema(schema: Any, *, param: str) -> None:
    """A 400 naming ``param`` unless ``schema`` is a JSON Schema object (its meta-schema's)."""
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


# The largest grammar built by default: llama.cpp parses it once per sequence on the engine
# thread (about 15 ms at this size here), and its size bounds what a step spends on it.
MAX_GRAMMAR_BYTES = 256 * 1024


def json_schema_grammar(schema: Any, *, param: str,
                        max_bytes: int = MAX_GRAMMAR_BYTES) -> str:
    """The GBNF grammar of ``schema`` (start rule ``root``); a 400 naming ``param`` if not.

    Grammars are cached by the schema's canonical JSON: a client that sends the same schema
    on every request (as SDKs do for a pydantic model) builds it once.
    """
    try:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the schema is not JSON: {exc}", param=param) from exc
    grammar = _cached_grammar(canonical, param)
    if len(grammar) > max_bytes:
        raise InvalidRequestError(
            f"the schema's grammar would be {len(grammar)} bytes; this server builds at most "
            f"{max_bytes} (--max-grammar-bytes): lower maxLength/maxItems or enum sizes",
            param=param, code="schema_too_large")
    return grammar


@lru_cache(maxsize=256)
def _cached_grammar(canonical: str, param: str) -> str:
    return _build_grammar(json.loads(canonical), param)


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
    grammar = factor_alternatives(grammar.replace(_CONVERTER_CHAR, _JSON_CHAR))
    if not grammar_parses(grammar):
        raise InvalidRequestError("the schema cannot be turned into a grammar", param=param)
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
