"""Constrained output, on the backends that say they enforce constraints: greedy text that
a client can parse as asked, and a refusal (naming the field) of what a backend cannot do."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from insieme.engine.base import Engine
from insieme.engine.constraints import Choice, Constraint, JsonObject, JsonSchema, Regex
from insieme.engine.types import Capability, FinishReason, GenerationRequest
from insieme.errors import InvalidRequestError
from tests.engine.conformance.streams import (
    ChoiceOutputs,
    chat_prompt,
    generate,
    greedy,
    request_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"sunny": {"type": "boolean"}},
    "required": ["sunny"],
    "additionalProperties": False,
}


def require_constraints(engine: Engine) -> None:
    if Capability.CONSTRAINTS not in engine.info.capabilities:
        pytest.skip("this backend does not enforce constraints")


async def constrained(engine: Engine, question: str, constraint: Constraint) -> ChoiceOutputs:
    prompt = await chat_prompt(engine, question)
    [choice] = await generate(engine, prompt, greedy(32, constraint=constraint))
    # Finished because the constraint was met, not cut short by max_tokens (room for the
    # model's own whitespace: a greedy object runs to 23 tokens on vLLM's float32 weights).
    assert choice.last.finish_reason is FinishReason.STOP, choice.text
    return choice


async def test_a_json_schema_gives_valid_json(engine: Engine) -> None:
    require_constraints(engine)
    choice = await constrained(engine, "Is it sunny today? Answer in JSON.",
                               JsonSchema(WEATHER_SCHEMA))
    jsonschema.validate(json.loads(choice.text), WEATHER_SCHEMA)


async def test_json_object_gives_an_object(engine: Engine) -> None:
    require_constraints(engine)
    choice = await constrained(engine, 'Reply with the JSON object {"ok": true}.', JsonObject())
    assert isinstance(json.loads(choice.text), dict)


async def test_a_choice_gives_one_of_its_options(engine: Engine) -> None:
    require_constraints(engine)
    choice = await constrained(engine, "What colour is grass?", Choice(("red", "green")))
    assert choice.text in ("red", "green")


async def test_a_regex_is_matched_or_refused(engine: Engine) -> None:
    require_constraints(engine)
    pattern = Regex(r"[0-9]{3}")
    if Capability.REGEX in engine.info.capabilities:
        choice = await constrained(engine, "Pick a three-digit number.", pattern)
        assert re.fullmatch(pattern.pattern, choice.text), choice.text
        return
    prompt = await chat_prompt(engine, "Pick a three-digit number.")
    request = GenerationRequest(request_id(), prompt, greedy(8, constraint=pattern))
    try:
        stream = await engine.submit(request)
    except InvalidRequestError as refused:
        assert refused.param == pattern.param
    else:
        await stream.aclose()
        pytest.fail("a backend without Capability.REGEX took a Regex constraint")
