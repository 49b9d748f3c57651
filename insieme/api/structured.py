"""``response_format``: JSON mode and JSON schemas, as a backend-neutral ``Constraint`` the
engine enforces during sampling (what it cannot enforce, it refuses by name)."""

from __future__ import annotations

import json
from typing import Any

from insieme.api.schemas import JsonSchemaFormat, ResponseFormat, TextFormat
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


def response_constraint(response_format: ResponseFormat | None,
                        limits: LimitsConfig | None = None) -> Constraint | None:
    """The constraint ``response_format`` asks for, or None for free text.

    The shapes are the wire schema's (``insieme.api.schemas.ResponseFormat``): text, any JSON
    object, or a JSON schema in ``json_schema.schema`` or (Together's older form, which
    together 1.x sends) in ``schema`` beside the type. A schema must be one by its
    meta-schema and within ``--max-schema-bytes``.
    """
    if response_format is None or isinstance(response_format, TextFormat):
        return None
    schema, param = response_format.schema_, "response_format.schema"
    if isinstance(response_format, JsonSchemaFormat) and response_format.json_schema:
        schema, param = (response_format.json_schema.schema_,
                         "response_format.json_schema.schema")
    if schema is None:
        return JsonObject(param="response_format")
    check_schema_size(schema, limits or LimitsConfig(), param)
    check_schema(schema, param=param)
    return JsonSchema(schema, param=param)
