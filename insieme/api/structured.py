"""``response_format``: JSON mode and JSON schemas, enforced by a grammar during sampling."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from insieme.engine.grammar import JSON_OBJECT_SCHEMA, json_schema_grammar
from insieme.errors import InvalidRequestError


@lru_cache(maxsize=1)
def json_object_grammar() -> str:
    return json_schema_grammar(JSON_OBJECT_SCHEMA, param="response_format")


def response_grammar(response_format: dict[str, Any] | None) -> str | None:
    """The grammar ``response_format`` asks for, or None for free text.

    Accepted: ``{type: "text"}``, ``{type: "json_object"}``, ``{type: "json_schema",
    json_schema: {name, schema, strict}}`` and Together's older forms with ``schema`` beside
    ``type`` (``json_object`` or ``json_schema``), which together 1.x sends.
    """
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        schema, param = response_format.get("schema"), "response_format.schema"
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if spec is not None and not isinstance(spec, dict):
            raise InvalidRequestError("'json_schema' must be an object with 'name' and 'schema'",
                                      param="response_format.json_schema")
        if spec is not None:
            schema, param = spec.get("schema"), "response_format.json_schema.schema"
        else:
            schema, param = response_format.get("schema"), "response_format.schema"
    else:
        raise InvalidRequestError(
            f"response_format type '{kind}' is not supported: use 'text', 'json_object' or "
            "'json_schema'",
            param="response_format.type",
        )
    if schema is None:
        return json_object_grammar()
    return json_schema_grammar(schema, param=param)
