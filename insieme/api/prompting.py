"""From a validated request body to what the engine runs: prompt tokens and sampling."""

from __future__ import annotations

from typing import Any

from insieme.api.schemas import ChatCompletionRequest, ChatMessage, SamplingFields
from insieme.config import ServerConfig
from insieme.engine.base import Engine
from insieme.engine.types import SamplingParams
from insieme.errors import InvalidRequestError, ModelNotFoundError

MAX_STOP_STRINGS = 16


def check_model(config: ServerConfig, model: str) -> None:
    if model not in config.served_model_names:
        served = ", ".join(config.served_model_names)
        raise ModelNotFoundError(
            f"The model '{model}' does not exist. This server serves: {served}", param="model"
        )


def reject_unsupported(body: SamplingFields) -> None:
    """Parameters this server accepts on the wire but cannot honour yet: a clear 400."""
    if body.logprobs not in (None, False, 0) or body.top_logprobs:
        raise InvalidRequestError("logprobs are not supported by this server yet", param="logprobs")
    if body.logit_bias:
        raise InvalidRequestError("logit_bias is not supported by this server yet",
                                  param="logit_bias")
    if isinstance(body, ChatCompletionRequest):
        kind = (body.response_format or {}).get("type", "text")
        if kind != "text":
            raise InvalidRequestError(
                f"response_format type '{kind}' is not supported by this server yet",
                param="response_format",
            )
        if body.tools and body.tool_choice != "none":
            raise InvalidRequestError("tools are not supported by this server yet", param="tools")


def chat_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the chat template expects them: plain dicts, text content only."""
    if not messages:
        raise InvalidRequestError("'messages' must contain at least one message",
                                  param="messages")
    rendered: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text":
                    raise InvalidRequestError(
                        f"content part type '{part.type}' is not supported: this model is "
                        "text-only",
                        param=f"messages.{i}.content.{j}.type",
                    )
                if part.text is None:
                    raise InvalidRequestError("a text part needs 'text'",
                                              param=f"messages.{i}.content.{j}.text")
                texts.append(part.text)
            content = "".join(texts)
        if content is None and not message.tool_calls:
            raise InvalidRequestError(f"message {i} has no content",
                                      param=f"messages.{i}.content")
        entry: dict[str, Any] = {
            # Templates trained without a developer role read it as the system prompt.
            "role": "system" if message.role == "developer" else message.role,
            "content": content if content is not None else "",
        }
        if message.name:
            entry["name"] = message.name
        if message.tool_calls:
            entry["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if message.tool_call_id:
            entry["tool_call_id"] = message.tool_call_id
        rendered.append(entry)
    return rendered


def sampling_params(body: SamplingFields, max_tokens: int) -> SamplingParams:
    stop: tuple[str, ...]
    if body.stop is None:
        stop = ()
    elif isinstance(body.stop, str):
        stop = (body.stop,) if body.stop else ()
    else:
        stop = tuple(s for s in body.stop if s)
    if len(stop) > MAX_STOP_STRINGS:
        raise InvalidRequestError(f"at most {MAX_STOP_STRINGS} stop strings", param="stop")
    top_k = body.top_k if body.top_k is not None else 0
    return SamplingParams(
        temperature=body.temperature if body.temperature is not None else 0.7,
        top_p=body.top_p if body.top_p is not None else 1.0,
        top_k=max(top_k, 0),
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        seed=body.seed,
        max_tokens=max_tokens,
        stop=stop,
        ignore_eos=body.ignore_eos,
    )


def fit_to_context(
    engine: Engine,
    config: ServerConfig,
    body: SamplingFields,
    prompt_tokens: list[int],
    requested_max_tokens: int | None,
) -> tuple[list[int], int]:
    """Check the prompt against the context; return (prompt tokens, max_tokens to use).

    With ``context_length_exceeded_behavior: "truncate"`` the prompt is cut from the front
    (keeping a leading BOS) instead of failing.
    """
    limit = engine.info.max_model_len
    wanted = requested_max_tokens or config.default_max_tokens
    if not prompt_tokens:
        raise InvalidRequestError("the prompt is empty", param="prompt")
    overflow = len(prompt_tokens) + (requested_max_tokens or 1) > limit
    if overflow and body.context_length_exceeded_behavior == "truncate":
        budget = max(1, limit - min(wanted, limit // 2))
        prompt_tokens = prompt_tokens[:1] + prompt_tokens[len(prompt_tokens) - budget + 1 :]
    elif len(prompt_tokens) >= limit:
        raise InvalidRequestError(
            f"This model's maximum context length is {limit} tokens, but the prompt has "
            f"{len(prompt_tokens)} tokens. Shorten it, or send "
            "context_length_exceeded_behavior: \"truncate\".",
            param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
            code="context_length_exceeded",
        )
    elif requested_max_tokens is not None and overflow:
        raise InvalidRequestError(
            f"This model's maximum context length is {limit} tokens; the prompt has "
            f"{len(prompt_tokens)} tokens and max_tokens asks for {requested_max_tokens} more.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return prompt_tokens, min(wanted, limit - len(prompt_tokens))
