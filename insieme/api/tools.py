"""Tool calls: validating ``tools``/``tool_choice``, putting them in the prompt, and reading
the model's calls back out of its text.

A chat template that renders ``tools``, assistant ``tool_calls`` and ``tool`` results itself
(found by rendering a probe conversation) gets them as they are. Any other template gets the
generic format below (Hermes-style, as Qwen 2.5 and NousHermes use): the tool list in the
system prompt, calls as ``<tool_call>`` blocks in the assistant's text, results as
``<tool_response>`` blocks in a user turn.

Reading calls back accepts ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks
and a reply that is one bare JSON call or a list of them (Llama 3.x, Mistral), naming a
declared tool. With ``tool_choice`` ``required`` or a named function, a ``ToolCall``
constraint makes the reply exactly one ``<tool_call>`` block whose arguments validate against
the tool's schema.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from insieme.api.schemas import ChatCompletionRequest, NamedToolChoice, Tool
from insieme.api.structured import check_schema_size
from insieme.config import LimitsConfig
from insieme.engine.constraints import ToolCall, ToolFunction, check_schema
from insieme.engine.tool_prompt import parse_arguments
from insieme.errors import InvalidRequestError

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_MARKERS = ("<tool_call>",)
_BARE_PREFIXES = ("[TOOL_CALLS]", "<|python_tag|>")


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
    if isinstance(choice, NamedToolChoice):
        forced = choice.function.name
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


def _checked_tool(tool: Tool, i: int) -> dict[str, Any]:
    """The tool as the prompt and the constraint see it (its schema checked, made an object)."""
    function = tool.function
    name = function.name
    parameters = function.parameters
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    check_schema(parameters, param=f"tools.{i}.function.parameters")
    if not set(parameters) & {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"}:
        parameters = {**parameters, "type": "object"}  # arguments are an object, always
    checked: dict[str, Any] = {"name": name, "parameters": parameters}
    if function.description is not None:
        checked["description"] = function.description
    return {"type": "function", "function": checked}


def call_constraint(plan: ToolPlan, limits: LimitsConfig | None = None) -> ToolCall:
    """One ``<tool_call>`` block calling a tool ``plan`` allows, with arguments valid for it
    (forced with ``tool_choice`` ``required`` or a named function). The schemas passed their
    meta-schema in ``plan``; refusals of what the engine cannot enforce name the tool."""
    functions = tuple(
        ToolFunction(tool["function"]["name"], tool["function"]["parameters"],
                     param=f"tools.{i}.function.parameters")
        for i, tool in enumerate(plan.tools) if tool["function"]["name"] in plan.callable_names)
    check_schema_size([function.parameters for function in functions],
                      limits or LimitsConfig(), "tools")
    return ToolCall(functions, forced=plan.enforced)


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
    arguments = parse_arguments(value.get("arguments", value.get("parameters", {})))
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
