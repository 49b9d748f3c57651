"""Tool calls on the scripted engine: the prompt the model sees, calls read back out of its
text (whole and streamed, through the official SDKs), and bad tools refused by name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import together

from insieme.api import tools
from insieme.api.schemas import ChatCompletionRequest
from insieme.config import ServerConfig
from insieme.engine.constraints import ToolFunction
from insieme.engine.fake import FakeEngine
from tests.conftest import MODEL, InProcessServer, Server

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALL_TEXT = ('Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
             '\n</tool_call>')


def scripted(prompt: str) -> str:
    """Calls the tool when offered one, answers once it has the tool's result."""
    if "<tool_response>" in prompt:
        return "It is sunny in Paris."
    if "<tools>" in prompt:
        return CALL_TEXT
    return "No tools here."


@pytest.fixture
def tool_server() -> Iterator[Server]:
    with InProcessServer(FakeEngine(scripted, token_delay=0.001), ServerConfig()) as srv:
        yield Server(base_url=f"{srv.root}/v1", root=srv.root)


def _plan(**body: Any) -> tools.ToolPlan | None:
    return tools.plan(ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": ASK, **body}))


def test_parse_calls_reads_hermes_blocks_and_bare_json() -> None:
    names = {"get_weather"}
    content, calls = tools.parse_calls(CALL_TEXT, names)
    assert content.strip() == "Let me check."
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert calls[0]["id"].startswith("call_")
    content, calls = tools.parse_calls(
        '[{"name": "get_weather", "parameters": {"city": "Rome"}}]', names)
    assert content == "" and json.loads(calls[0]["function"]["arguments"]) == {"city": "Rome"}
    for text in ('<tool_call>{"name": "unknown", "arguments": {}}</tool_call>',
                 '{"name": "get_weather", "arguments": "not json"}', "{ nope", "Hi!"):
        assert tools.parse_calls(text, names) == (text, [])


def test_call_stream_holds_back_only_what_may_be_a_call() -> None:
    plan = _plan(tools=[WEATHER])
    assert plan is not None
    stream = tools.CallStream(plan)
    sent = [stream.feed(piece) for piece in ("Let me", " check. <tool", "_call>\n{", '"name"')]
    assert "".join(sent) == "Let me check. "
    stream.feed(': "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    rest, calls = stream.finish()
    assert rest == "" and calls[0]["function"]["name"] == "get_weather"
    prose = tools.CallStream(plan)
    assert prose.feed("{curly} but ") == ""  # may be a bare JSON call: held
    assert prose.finish() == ("{curly} but ", [])


def test_tool_call_whole_response_openai(tool_server: Server) -> None:
    client = openai.OpenAI(base_url=tool_server.base_url, api_key="x", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=ASK,  # type: ignore[arg-type]
                                           tools=[WEATHER])  # type: ignore[list-item]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    # Round trip: the result goes back in; the scripted model answers from it.
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    final = client.chat.completions.create(model=MODEL, messages=history,  # type: ignore[arg-type]
                                           tools=[WEATHER])  # type: ignore[list-item]
    assert final.choices[0].message.content == "It is sunny in Paris."
    assert final.choices[0].finish_reason == "stop"


def test_tool_call_streamed_openai_helper(tool_server: Server) -> None:
    client = openai.OpenAI(base_url=tool_server.base_url, api_key="x", max_retries=0)
    with client.chat.completions.stream(model=MODEL, messages=ASK,  # type: ignore[arg-type]
                                        tools=[WEATHER]) as stream:  # type: ignore[list-item]
        for _ in stream:
            pass
        snapshot = stream.current_completion_snapshot
    choice = snapshot.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check. "
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_tool_call_streamed_together(tool_server: Server) -> None:
    client = together.Together(base_url=tool_server.base_url, api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK,  # type: ignore[arg-type]
                                                 tools=[WEATHER], stream=True))  # type: ignore[list-item]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [call for d in deltas for call in (d.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0  # one call, whole, in one delta
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert "<tool_call>" not in "".join(d.content or "" for d in deltas)


def test_tool_choice_none_leaves_tools_out(tool_server: Server) -> None:
    body = {"model": MODEL, "messages": ASK, "tools": [WEATHER], "tool_choice": "none"}
    reply = httpx.post(f"{tool_server.base_url}/chat/completions", json=body).json()
    assert reply["choices"][0]["message"]["content"] == "No tools here."
    assert reply["choices"][0]["message"]["tool_calls"] is None


def test_forced_tool_choice_reaches_the_engine_as_a_tool_call_constraint() -> None:
    other = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}}}}
    plan = _plan(tools=[other, WEATHER], tool_choice={"type": "function",
                                                      "function": {"name": "get_weather"}})
    assert plan is not None and plan.enforced and plan.forced == "get_weather"
    constraint = tools.call_constraint(plan)
    assert constraint.forced and constraint.prefix == "<tool_call>\n"
    assert constraint.functions == (ToolFunction(
        "get_weather", WEATHER["function"]["parameters"], param="tools.1.function.parameters"),)
    required = _plan(tools=[other, WEATHER], tool_choice="required")
    assert required is not None
    assert [f.name for f in tools.call_constraint(required).functions] == ["get_time",
                                                                          "get_weather"]


BAD_TOOLS: list[tuple[dict[str, Any], str]] = [
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]},
     "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]},
     "tools.0.function.name"),
    ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
    ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": "x"}}}]},
     "tools.0.function.parameters"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
]


@pytest.mark.parametrize(("extra", "param"), BAD_TOOLS)
def test_bad_tools_are_400_naming_the_parameter(fake_server: Server, extra: dict[str, Any],
                                                param: str) -> None:
    response = httpx.post(f"{fake_server.base_url}/chat/completions",
                          json={"model": MODEL, "messages": ASK, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
