"""Request bodies as the wire contract defines them (pydantic stops at this layer).

Unknown fields are ignored (clients send ``user``, ``safety_model`` and more); out-of-range
values fail validation and become a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class ContentPart(_Body):
    """One part of a message's content; only ``text`` parts suit a text-only model."""

    type: str
    text: str | None = None


class FunctionCall(_Body):
    name: str
    arguments: str | dict[str, Any] = ""  # a JSON string on the wire; some clients send objects


class ToolCall(_Body):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class SamplingFields(_Body):
    """Fields shared by chat and legacy completions."""

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | Annotated[int, Field(ge=0, le=20)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    logit_bias: dict[str, float] | None = None
    echo: bool | None = None
    context_length_exceeded_behavior: Literal["error", "truncate"] = "error"
    # vLLM's extension: keep generating past end-of-sequence (benchmarks of fixed length).
    ignore_eos: bool = False


# -- response_format ------------------------------------------------------------------------

JsonSchemaObject = dict[str, Any]  # a JSON Schema; checked against its meta-schema later


class JsonSchemaSpec(_Body):
    name: str | None = None
    description: str | None = None
    schema_: JsonSchemaObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    """Any JSON object; together 1.x sends a ``schema`` beside the type."""

    type: Literal["json_object"]
    schema_: JsonSchemaObject | None = Field(default=None, alias="schema")


class JsonSchemaFormat(_Body):
    """A JSON schema in ``json_schema`` (OpenAI), or beside the type (Together's older form)."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec | None = None
    schema_: JsonSchemaObject | None = Field(default=None, alias="schema")


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat,
                           Field(discriminator="type")]


# -- tools --------------------------------------------------------------------------------------

ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class FunctionSpec(_Body):
    name: ToolName
    description: str | None = None
    parameters: JsonSchemaObject | None = None  # None: no arguments
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionSpec


class FunctionName(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: FunctionName


# "auto", "none", "required", or (as Together accepts) the bare name of a tool.
ToolChoice = str | NamedToolChoice


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
PromptText = Annotated[str, Field(min_length=1)]


class CompletionRequest(SamplingFields):
    # One prompt per request: text or token ids, or a list holding one of them.
    prompt: (PromptText | Annotated[list[PromptText], Field(min_length=1, max_length=1)]
             | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=1)])
