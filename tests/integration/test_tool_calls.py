"""Tool calls on the real model through the official SDKs: a call, its result going back
through the chat template, and a final answer; streamed and not; ``required`` and a named
function forced by grammar, so the arguments always validate against the tool's schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
import together

from tests.conftest import MODEL, SEED_MODEL, Server

pytestmark = pytest.mark.model

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
TIME_PARAMS = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}},
               "required": ["timezone"]}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                      "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                      "parameters": TIME_PARAMS}},
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def _openai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def _together(server: Server) -> together.Together:
    return together.Together(base_url=server.base_url, api_key="unused", max_retries=0)


def _check_call(name: str, arguments: str, expected: str, schema: dict[str, Any]) -> None:
    assert name == expected
    jsonschema.validate(json.loads(arguments), schema)


def test_openai_round_trip(real_server: Server) -> None:
    client = _openai(real_server)
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS,
                                           tool_choice="required", max_tokens=80, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    _check_call(call.function.name, call.function.arguments,  # type: ignore[union-attr]
                "get_weather", WEATHER_PARAMS)
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id,
                "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    final = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS,
                                           tool_choice="none", max_tokens=40, temperature=0)
    answer = final.choices[0]
    assert answer.message.tool_calls is None
    assert answer.message.content and answer.finish_reason in ("stop", "length")


def test_openai_streamed_round_trip(real_server: Server) -> None:
    client = _openai(real_server)
    with client.chat.completions.stream(model=MODEL, messages=ASK, tools=TOOLS,
                                        tool_choice="required", max_tokens=80,
                                        temperature=0) as stream:
        for _ in stream:
            pass
        first = stream.get_final_completion()
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    _check_call(call.function.name, call.function.arguments,
                "get_weather", WEATHER_PARAMS)
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True,
                                                         exclude={"parsed"}),
               {"role": "tool", "tool_call_id": call.id, "content": "21C and sunny"}]
    stream2 = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS,
                                             max_tokens=40, temperature=0, stream=True)
    chunks = list(stream2)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert any(c.choices[0].delta.content or c.choices[0].delta.tool_calls for c in chunks)


def test_together_named_tool_choice_forces_that_function(real_server: Server) -> None:
    client = _together(real_server)
    named: Any = {"type": "function", "function": {"name": "get_time"}}
    reply = client.chat.completions.create(model=SEED_MODEL, messages=ASK, tools=TOOLS,
                                           tool_choice=named, max_tokens=80, temperature=0.8,
                                           seed=3)
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[union-attr,index]
    assert reply.choices[0].finish_reason == "tool_calls"
    _check_call(call.function.name, call.function.arguments, "get_time", TIME_PARAMS)
    stream = client.chat.completions.create(model=SEED_MODEL, messages=ASK, tools=TOOLS,
                                            tool_choice=named, max_tokens=80, temperature=0,
                                            stream=True)
    chunks = [c for c in stream if c.choices]
    calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id
    _check_call(calls[0].function.name, calls[0].function.arguments, "get_time", TIME_PARAMS)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # The result goes back in, in Together's message shape, for the final answer.
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0].id, "type": "function",
         "function": {"name": "get_time", "arguments": calls[0].function.arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "09:41"}]
    final = client.chat.completions.create(model=SEED_MODEL, messages=history, max_tokens=30,
                                           temperature=0)
    assert final.choices[0].message.content  # type: ignore[union-attr]
