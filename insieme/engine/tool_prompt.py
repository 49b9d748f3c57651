"""Tools in the prompt, for every backend that renders a chat template.

A chat template that renders ``tools``, assistant ``tool_calls`` and ``tool`` results itself
(found by rendering a probe conversation) gets them as they are. Any other template gets the
generic format below (Hermes-style, as Qwen 2.5 and NousHermes use): the tool list in the
system prompt, calls as ``<tool_call>`` blocks in the assistant's text, results as
``<tool_response>`` blocks in a user turn. The API reads calls back out of the reply
(``insieme.api.tools``); a ``ToolCall`` constraint uses the same ``<tool_call>`` block.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from insieme.engine.chat_template import ChatTemplate
from insieme.errors import InvalidRequestError

TOOLS_PROMPT = """You can call functions to help with the user's request. They are described \
by JSON Schema within <tools></tools>:
<tools>
{tools}
</tools>
To call a function, answer with one <tool_call></tool_call> block per call, each holding a \
JSON object with the function's name and its arguments:
<tool_call>
{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}
</tool_call>"""


_PROBE_TOOL = "insieme_probe_tool_x7"
_PROBE_CALL = "insieme_probe_call_x7"
_PROBE_RESULT = "insieme_probe_result_x7"


def renders_tools(template: ChatTemplate) -> bool:
    """Whether the chat template renders tools, tool calls and tool results itself (found by
    rendering a probe conversation; once per template)."""
    return _renders_tools(template)


@lru_cache(maxsize=32)
def _renders_tools(template: ChatTemplate) -> bool:
    probe: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function",
             "function": {"name": _PROBE_CALL, "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": _PROBE_RESULT},
    ]
    tools = [{"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {}}}]
    try:
        text = template.render(probe, tools=tools)
    except InvalidRequestError:
        return False
    return all(s in text for s in (_PROBE_TOOL, _PROBE_CALL, _PROBE_RESULT))


def prepare(template: ChatTemplate, messages: list[dict[str, Any]],
            tools: list[dict[str, Any]] | None
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and ``tools`` to render ``template`` with: as they are for a template
    that renders tools itself, else in the generic format (``tools`` then None)."""
    offered = tools or []
    has_history = any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if not offered and not has_history:
        return messages, None
    if renders_tools(template):
        return [_with_object_arguments(m) for m in messages], offered or None
    return generic_messages(messages, offered), None


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as an object when they are a JSON string (some clients send one)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def _with_object_arguments(message: dict[str, Any]) -> dict[str, Any]:
    # Hugging Face templates write ``arguments | tojson``: they want an object, not a string.
    if not message.get("tool_calls"):
        return message
    calls = [{**call, "function": {**call["function"],
                                   "arguments": parse_arguments(call["function"]["arguments"])}}
             for call in message["tool_calls"]]
    return {**message, "tool_calls": calls}


def generic_messages(messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation in the generic tool format, for templates that know no tools."""
    out: list[dict[str, Any]] = []
    last_tool_turn = -1
    for message in messages:
        role = message["role"]
        if role == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            if last_tool_turn == len(out) - 1 and out:
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
                last_tool_turn = len(out) - 1
            continue
        entry = {"role": role, "content": message["content"]}
        if message.get("tool_calls"):
            blocks = [call_block(call["function"]["name"], call["function"]["arguments"])
                      for call in message["tool_calls"]]
            entry["content"] = "\n".join([message["content"], *blocks] if message["content"]
                                         else blocks)
        out.append(entry)
    if tools:
        listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
        prompt = TOOLS_PROMPT.format(tools=listing)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def call_block(name: str, arguments: Any) -> str:
    call = json.dumps({"name": name, "arguments": parse_arguments(arguments)}, ensure_ascii=False)
    return f"<tool_call>\n{call}\n</tool_call>"
