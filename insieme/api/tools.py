"""Tool calls: validating ``tools``/``tool_choice``, putting them in the prompt, and reading
the model's calls back out of its text.

A chat template that renders ``tools``, assistant ``tool_calls`` and ``tool`` results itself
(found by rendering a probe conversation) gets them as they are. Any other template gets the
generic format below (Hermes-style, as Qwen 2.5 and NousHermes use): the tool list in the
system prompt, calls as ``<tool_call>`` blocks in the assistant's text, results as
``<tool_response>`` blocks in a user turn.

Reading calls back accepts ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks
and a reply that is one bare JSON call or a list of them (Llama 3.x, Mistral), naming a
declared tool. With ``tool_choice`` ``required`` or a named function, a grammar makes the
reply exactly one ``<tool_call>`` block whose arguments validate against the tool's schema.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from insieme.api.schemas import ChatCompletionRequest
from insieme.api.structured import check_schema_size
from insieme.config import LimitsConfig
from insieme.engine.base import Engine
from insieme.engine.grammar import check_schema, json_schema_grammar, rename_root
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

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_MARKERS = ("<tool_call>",)
_BARE_PREFIXES = ("[TOOL_CALLS]", "<|python_tag|>")
_CALL_RULE = "insieme-tool-call"


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """A request's tools (validated) and what ``tool_choice`` asks of the model."""

    tools: list[dict[str, Any]]
    choice: str  # "auto", "none", "required" or "function" (a named one, in ``forced``)
    forced: str | None = None

    @property
    def offered(self) -> list[dict[str, Any]]:
        """The tools the model is told about (none with ``tool_choice: none``)."""
        return [] if self.choice == "none" else self.tools

    @property
    def callable_names(self) -> set[str]:
        if self.forced is not None:
            return {self.forced}
        return {tool["function"]["name"] for tool in self.offered}

    @property
    def enforced(self) -> bool:
        return self.choice in ("required", "function")


def plan(body: ChatCompletionRequest, limits: LimitsConfig | None = None) -> ToolPlan | None:
    """Validate ``tools`` and ``tool_choice``; None when the request has no tools."""
    limits = limits or LimitsConfig()
    if body.tools and len(body.tools) > limits.max_tools:
        raise InvalidRequestError(
            f"'tools' has {len(body.tools)} tools; this server accepts at most "
            f"{limits.max_tools} (--max-tools)", param="tools", code="too_many_tools")
    tools = [_checked_tool(tool, i) for i, tool in enumerate(body.tools or [])]
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        name = tool["function"]["name"]
        if name in seen:
            raise InvalidRequestError(f"two tools are named '{name}'",
                                      param=f"tools.{i}.function.name")
        seen.add(name)
    choice = body.tool_choice
    if choice is None:
        return ToolPlan(tools, "auto") if tools else None
    forced: str | None = None
    if isinstance(choice, dict):
        function = choice.get("function")
        forced = function.get("name") if isinstance(function, dict) else None
        if not isinstance(forced, str):
            raise InvalidRequestError(
                "tool_choice must be 'auto', 'none', 'required' or "
                "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")
    elif choice not in ("auto", "none", "required"):
        forced = choice  # Together accepts a bare tool name
    if forced is not None:
        if forced not in seen:
            raise InvalidRequestError(f"tool_choice names '{forced}', which is not in 'tools'",
                                      param="tool_choice")
        return ToolPlan(tools, "function", forced)
    if choice == "required" and not tools:
        raise InvalidRequestError("tool_choice 'required' needs 'tools'", param="tool_choice")
    return ToolPlan(tools, str(choice)) if tools else None


def _checked_tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if tool.get("type", "function") != "function":
        raise InvalidRequestError(f"tool type '{tool.get('type')}' is not supported: only "
                                  "'function'", param=f"tools.{i}.type")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise InvalidRequestError("a tool needs a 'function' object", param=f"tools.{i}.function")
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            "a tool's function needs a 'name' of 1 to 64 letters, digits, '_', '-', '.' or ':'",
            param=f"tools.{i}.function.name")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    check_schema(parameters, param=f"tools.{i}.function.parameters")
    if not set(parameters) & {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"}:
        parameters = {**parameters, "type": "object"}  # arguments are an object, always
    checked = {"name": name, "parameters": parameters}
    if function.get("description") is not None:
        checked["description"] = str(function["description"])
    return {"type": "function", "function": checked}


def call_grammar(plan: ToolPlan, limits: LimitsConfig | None = None) -> str:
    """The grammar of one ``<tool_call>`` block calling a tool ``plan`` allows."""
    limits = limits or LimitsConfig()
    check_schema_size([tool["function"]["parameters"] for tool in plan.tools
                       if tool["function"]["name"] in plan.callable_names], limits, "tools")
    branches: list[dict[str, Any]] = []
    defs: dict[str, dict[str, Any]] = {"$defs": {}, "definitions": {}}
    for i, tool in enumerate(plan.tools):
        function = tool["function"]
        if function["name"] not in plan.callable_names:
            continue
        param = f"tools.{i}.function.parameters"
        # Names this tool if refused.
        json_schema_grammar(function["parameters"], param=param,
                            max_bytes=limits.max_grammar_bytes)
        parameters = copy.deepcopy(function["parameters"])
        for key in defs:  # references are to the root: move definitions up to the call's
            for name, sub in parameters.pop(key, {}).items():
                if defs[key].setdefault(name, sub) != sub:
                    raise InvalidRequestError(f"tools define different '{key}/{name}'",
                                              param=param)
        branches.append({"type": "object",
                         "properties": {"name": {"const": function["name"]},
                                        "arguments": parameters},
                         "required": ["name", "arguments"]})
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    schema.update({key: entries for key, entries in defs.items() if entries})
    check_schema_size(schema, limits, "tools")
    grammar = rename_root(json_schema_grammar(schema, param="tools",
                                              max_bytes=limits.max_grammar_bytes), _CALL_RULE)
    return f'{grammar}\nroot ::= "<tool_call>\\n" {_CALL_RULE} "\\n</tool_call>"'


# -- prompts ----------------------------------------------------------------------------------

_PROBE_TOOL = "insieme_probe_tool_x7"
_PROBE_CALL = "insieme_probe_call_x7"
_PROBE_RESULT = "insieme_probe_result_x7"
_native: dict[str | None, bool] = {}


def native_tools(engine: Engine) -> bool:
    """Whether the chat template renders tools, tool calls and tool results itself."""
    source = engine.info.chat_template
    if source not in _native:
        probe: list[dict[str, Any]] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_0", "type": "function",
                 "function": {"name": _PROBE_CALL, "arguments": {}}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": _PROBE_RESULT},
        ]
        tools = [{"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {}}}]
        try:
            text = engine.render_chat(probe, tools=tools).text
        except InvalidRequestError:
            text = ""
        _native[source] = all(s in text for s in (_PROBE_TOOL, _PROBE_CALL, _PROBE_RESULT))
    return _native[source]


def prepare(engine: Engine, messages: list[dict[str, Any]],
            tool_plan: ToolPlan | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and ``tools`` to render the chat template with."""
    offered = tool_plan.offered if tool_plan else []
    has_history = any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if not offered and not has_history:
        return messages, None
    if native_tools(engine):
        return [_with_object_arguments(m) for m in messages], offered or None
    return generic_messages(messages, offered), None


def _arguments(arguments: Any) -> Any:
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
                                   "arguments": _arguments(call["function"]["arguments"])}}
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
    call = json.dumps({"name": name, "arguments": _arguments(arguments)}, ensure_ascii=False)
    return f"<tool_call>\n{call}\n</tool_call>"


# -- reading calls back -----------------------------------------------------------------------

def parse_calls(text: str, names: set[str]) -> tuple[str, list[dict[str, Any]]]:
    """(the text outside the calls, the calls) of a reply; ([text], []) when it has none."""
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        call = _call(_json_or_none(match.group(1)), names)
        if call is not None:
            kept.append(text[position:match.start()])
            position = match.end()
            calls.append(call)
    if calls:
        return "".join(kept) + text[position:], calls
    bare = text.strip()
    for prefix in _BARE_PREFIXES:
        bare = bare.removeprefix(prefix).strip()
    if bare[:1] in ("{", "["):
        value = _json_or_none(bare)
        found = [_call(item, names) for item in (value if isinstance(value, list) else [value])]
        if found and all(call is not None for call in found):
            return "", [call for call in found if call is not None]
    return text, []


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _call(value: Any, names: set[str]) -> dict[str, Any] | None:
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = _arguments(value.get("arguments", value.get("parameters", {})))
    if not isinstance(arguments, dict):
        return None
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": value["name"],
                         "arguments": json.dumps(arguments, ensure_ascii=False)}}


class CallStream:
    """One streamed choice: content that cannot be part of a call goes out at once; the
    rest is held until the end, then read as calls (or released as content)."""

    def __init__(self, tool_plan: ToolPlan) -> None:
        self.names = tool_plan.callable_names
        self.hold_all = tool_plan.enforced
        self.text = ""
        self.sent = 0  # characters of ``text`` already streamed as content

    def feed(self, piece: str) -> str:
        self.text += piece
        end = self.sent if self.hold_all else self._safe_end()
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out

    def _safe_end(self) -> int:
        text = self.text
        if self.sent == 0 and text.lstrip()[:1] in ("", "{", "["):
            return 0  # the reply may be one bare JSON call: wait for its end
        ends = [len(text)]
        for marker in (*_MARKERS, *_BARE_PREFIXES):
            at = text.find(marker, self.sent)
            if at != -1:
                ends.append(at)
            for size in range(min(len(marker) - 1, len(text)), 0, -1):
                if text.endswith(marker[:size]):  # may grow into a marker
                    ends.append(len(text) - size)
                    break
        return min(ends)

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """(content still to send, the calls) once the choice has ended."""
        content, calls = parse_calls(self.text, self.names)
        if not calls:
            return self.text[self.sent:], []
        sent = self.text[:self.sent]
        return (content[len(sent):] if content.startswith(sent) else "").rstrip(), calls
