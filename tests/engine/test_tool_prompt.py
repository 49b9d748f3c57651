"""Tools in the prompt for a template that knows none (the generic format)."""

from __future__ import annotations

from insieme.engine import tool_prompt
from insieme.engine.chat_template import ChatTemplate

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def test_generic_prompt_carries_tools_calls_and_results() -> None:
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "22C"},
    ]
    template = ChatTemplate(None)  # the fallback ChatML template knows no tools
    assert not tool_prompt.renders_tools(template)
    messages, template_tools = tool_prompt.prepare(template, history, [WEATHER])
    assert template_tools is None
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("Be brief.")
    assert '"name": "get_weather"' in messages[0]["content"]
    assert messages[2] == {"role": "assistant", "content": tool_prompt.call_block(
        "get_weather", '{"city": "Paris"}')}
    # Consecutive results share one user turn, so strict templates see alternating roles.
    assert messages[3]["role"] == "user" and len(messages) == 4
    assert messages[3]["content"].count("<tool_response>") == 2


def test_a_conversation_without_tools_is_left_alone() -> None:
    plain = [{"role": "user", "content": "hi"}]
    assert tool_prompt.prepare(ChatTemplate(None), plain, None) == (plain, None)
