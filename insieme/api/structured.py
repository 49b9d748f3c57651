"""``response_format``: JSON mode and JSON schemas, as a backend-neutral ``Constraint`` the
engine enforces during sampling (what it cannot enforce, it refuses by name)."""

from __future__ import annotations

import json
from typing import Any

from insieme.config import LimitsConfig
from insieme.engine.constraints import Constraint, JsonObject, JsonSchema, check_schema
from insieme.errors import InvalidRequestError


def check_schema_size(schema: Any, limits: LimitsConfig, param: str) -> None:
    """Refuse a schema larger than ``--max-schema-bytes`` before any work is done on it."""
    size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")))
    if size > limits.max_schema_bytes:
        raise InvalidRequestError(
            f"the schema is {size} bytes; this server accepts at most {limits.max_schema_bytes}"
            " (--max-schema-bytes)", param=param, code="schema_too_large")


def response_constraint(response_format: dict[str, Any] | None,
                        limits: LimitsConfig | None = None) -> Constraint | None:
    """The constraint ``response_format`` asks for, or None for free text.

    Accepted: ``{type: "text"}``, ``{type: "json_object"}``, ``{type: "json_schema",
    json_schema: {name, schema, strict}}`` and Together's older forms with ``schema`` beside
    ``type`` (``json_object`` or ``json_schema``), which together 1.x sends. A schema must be
    one by its meta-schema and within ``--max-schema-bytes``.
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
        return JsonObject(param="response_format")
    check_schema_size(schema, limits or LimitsConfig(), param)
    check_schema(schema, param=param)
    return JsonSchema(schema, param=param)
