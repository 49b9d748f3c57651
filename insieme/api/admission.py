"""From a validated request body to a running request: the one path every generation takes.

``chat`` and ``completion`` turn a body into a ``GenerationRequest`` for the engine of the
model it names (``insieme.api.routing`` finds and loads it): the prompt rendered and tokenised
by the engine, the output constraint, sampling, the context fit. ``submit`` makes the last
checks (every limit of this server's and of the key's),
reserves the key's tokens, hands the request to the engine and wraps its stream for timing.
Everything that fails here is refused before a streamed response has begun, in the
contract's shape; the routes only format what comes back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from insieme.api import logprobs, structured, tools
from insieme.api.context import AppContext
from insieme.api.logprobs import LogprobOptions
from insieme.api.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
)
from insieme.api.tracking import RequestRecord, TrackedStream
from insieme.config import LimitsConfig, ServerConfig
from insieme.engine.base import Engine
from insieme.engine.constraints import Constraint, Regex
from insieme.engine.types import Capability, GenerationRequest, SamplingParams
from insieme.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request the engine runs: its stream, and what shapes the response besides it."""

    stream: TrackedStream
    request_id: str
    options: LogprobOptions | None  # logprobs, in the dialect the client asked for
    tool_plan: tools.ToolPlan | None = None
    prompt_text: str | None = None  # the rendered chat prompt (for echo)


async def chat(ctx: AppContext, record: RequestRecord, body: ChatCompletionRequest,
               engine: Engine) -> Admitted:
    """``body`` for ``engine``, the engine of the model it names (``insieme.api.routing``)."""
    limits = ctx.config.limits
    options = logprobs.options(body)
    stop_strings(body, limits)  # refused before any work is done
    tool_plan = tools.plan(body, limits)
    messages = chat_messages(body.messages, limits)
    check_prompt_size(sum(len(m["content"]) for m in messages), limits,
                      engine.info.max_model_len, "messages")
    constraint = _constraint(body, tool_plan, limits)  # the engine compiles it, off the loop
    prompt = await engine.render_chat(messages, tools=tool_plan.offered if tool_plan else None)
    requested = body.max_completion_tokens or body.max_tokens
    tokens, max_tokens = fit_to_context(engine, ctx.config, body, prompt.tokens, requested)
    echo = bool(body.echo) and not body.stream  # Together's ``prompt`` field, whole responses
    params = sampling_params(body, max_tokens, n_vocab=engine.info.n_vocab,
                             constraint=constraint, logprobs=options, echo=echo, limits=limits)
    request_id = _new_id("chatcmpl")
    stream = await submit(ctx, record, GenerationRequest(request_id, tokens, params, body.n,
                                                         streamed=bool(body.stream)),
                          engine)
    return Admitted(stream, request_id, options, tool_plan, prompt.text)


async def completion(ctx: AppContext, record: RequestRecord, body: CompletionRequest,
                     engine: Engine) -> Admitted:
    limits = ctx.config.limits
    options = logprobs.options(body)
    stop_strings(body, limits)
    tokens = await _prompt_tokens(ctx, body, engine)
    tokens, max_tokens = fit_to_context(engine, ctx.config, body, tokens, body.max_tokens)
    params = sampling_params(body, max_tokens, n_vocab=engine.info.n_vocab,
                             logprobs=options, echo=bool(body.echo), limits=limits)
    request_id = _new_id("cmpl")
    stream = await submit(ctx, record, GenerationRequest(request_id, tokens, params, body.n,
                                                         streamed=bool(body.stream)),
                          engine)
    return Admitted(stream, request_id, options)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _constraint(body: ChatCompletionRequest, tool_plan: tools.ToolPlan | None,
                limits: LimitsConfig) -> Constraint | None:
    """What ``tool_choice`` or ``response_format`` asks the output to follow."""
    if tool_plan is not None and tool_plan.enforced:
        return tools.call_constraint(tool_plan, limits)
    return structured.response_constraint(body.response_format, limits)


async def _prompt_tokens(ctx: AppContext, body: CompletionRequest,
                         engine: Engine) -> list[int]:
    """The one prompt's tokens (the wire schema allows one: text or ids, maybe in a list)."""
    prompt = body.prompt
    if isinstance(prompt, list) and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        # Special token text in it is parsed: the caller wrote the whole prompt.
        check_prompt_size(len(prompt), ctx.config.limits, engine.info.max_model_len,
                          "prompt")
        return await engine.tokenize(prompt)
    return list(prompt)  # type: ignore[arg-type]  # ids: checked against the vocabulary


# -- the last checks, and the engine ---------------------------------------------------------

async def submit(ctx: AppContext, record: RequestRecord, request: GenerationRequest,
                 engine: Engine) -> TrackedStream:
    """Check ``request`` against the server's limits and the key's tokens per minute, submit
    it to ``engine``, and return its stream, timed into ``record``."""
    check_limits(ctx, record, request, engine)
    if record.key is not None:
        record.reservation = ctx.limiter.reserve(record.key, len(request.prompt_tokens),
                                                 request.sampling.max_tokens * request.n)
    try:
        stream = await engine.submit(request)
    except BaseException:
        ctx.limiter.settle(record.reservation, 0)
        raise
    record.completion_id = request.request_id
    record.n = request.n
    record.prompt_tokens = len(request.prompt_tokens)
    limits = ctx.config.limits
    deadline = None if limits.request_timeout is None else (
        record.arrived + limits.request_timeout)
    tracked = TrackedStream(stream, record, ctx.metrics.model(record.model),
                            ctx.lifecycle.streams, deadline, limits.request_timeout)
    record.streams.append(tracked)
    return tracked


def check_limits(ctx: AppContext, record: RequestRecord, request: GenerationRequest,
                 engine: Engine) -> None:
    limits = ctx.config.limits
    info = engine.info
    prompt_tokens = len(request.prompt_tokens)
    param = "messages" if record.path.endswith("/chat/completions") else "prompt"
    # Last line of defence for token ids a client sent: never hand the engine a bad one.
    vocab = info.n_vocab
    if vocab and any(not 0 <= t < vocab for t in request.prompt_tokens):
        raise InvalidRequestError("a prompt token id is outside the vocabulary", param=param)
    if limits.max_prompt_tokens is not None and prompt_tokens > limits.max_prompt_tokens:
        raise InvalidRequestError(
            f"the prompt has {prompt_tokens} tokens; this server accepts at most "
            f"{limits.max_prompt_tokens}", param=param, code="prompt_too_long")
    cap = limits.max_tokens_cap
    if cap is not None and request.sampling.max_tokens > cap:
        raise InvalidRequestError(
            f"max_tokens is {request.sampling.max_tokens}; this server allows at most {cap}",
            param="max_tokens", code="max_tokens_too_large")
    constraint = request.sampling.constraint
    if constraint is not None:
        needed = Capability.REGEX if isinstance(constraint, Regex) else Capability.CONSTRAINTS
        if needed not in info.capabilities:
            raise InvalidRequestError(
                f"this model's engine cannot constrain output ({needed.value})",
                param=constraint.param, code="constraint_unsupported")
    if info.max_num_seqs and request.n > info.max_num_seqs:
        # Its n sequences would never run at once; the engine refuses it too.
        raise InvalidRequestError(
            f"n is {request.n}, but this server decodes at most {info.max_num_seqs} "
            "sequences at once (--max-num-seqs)", param="n", code="n_too_large")


# -- building the request ----------------------------------------------------------------

MAX_LOGIT_BIAS = 1024
# Characters per token of context a prompt may have before it is tokenised (English runs
# about 4; a prompt past this could never fit, and tokenising it costs a core).
PROMPT_CHARS_PER_TOKEN = 16


def logit_bias(body: SamplingFields, n_vocab: int) -> tuple[tuple[int, float], ...]:
    """``{"token id": bias}`` checked against the vocabulary; biases are added to logits."""
    if not body.logit_bias:
        return ()
    if len(body.logit_bias) > MAX_LOGIT_BIAS:
        raise InvalidRequestError(f"at most {MAX_LOGIT_BIAS} logit_bias entries",
                                  param="logit_bias")
    biases = []
    for key, bias in body.logit_bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequestError(f"logit_bias keys are token ids; '{key}' is not one",
                                      param="logit_bias") from None
        if not 0 <= token < n_vocab:
            raise InvalidRequestError(
                f"logit_bias token id {token} is outside the vocabulary (0 to {n_vocab - 1})",
                param="logit_bias")
        if not -100.0 <= bias <= 100.0:
            raise InvalidRequestError(f"logit_bias values must be between -100 and 100, "
                                      f"not {bias}", param="logit_bias")
        biases.append((token, float(bias)))
    return tuple(biases)


def check_prompt_size(chars: int, limits: LimitsConfig, max_model_len: int, param: str) -> None:
    """Refuse a prompt too long to be worth tokenising (``--max-prompt-chars``)."""
    limit = limits.max_prompt_chars or PROMPT_CHARS_PER_TOKEN * max_model_len
    if chars > limit:
        raise InvalidRequestError(
            f"the prompt has {chars} characters; this server accepts at most {limit} "
            "(--max-prompt-chars)", param=param, code="prompt_too_long")


def chat_messages(messages: list[ChatMessage],
                  limits: LimitsConfig | None = None) -> list[dict[str, Any]]:
    """Messages as the chat template expects them: plain dicts, text content only."""
    limits = limits or LimitsConfig()
    if len(messages) > limits.max_messages:
        raise InvalidRequestError(
            f"'messages' has {len(messages)} messages; this server accepts at most "
            f"{limits.max_messages} (--max-messages)", param="messages", code="too_many_messages")
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


def sampling_params(
    body: SamplingFields,
    max_tokens: int,
    *,
    n_vocab: int = 0,
    constraint: Constraint | None = None,
    logprobs: LogprobOptions | None = None,
    echo: bool = False,
    limits: LimitsConfig | None = None,
) -> SamplingParams:
    """The engine's sampling parameters; ``echo`` returns the prompt's tokens, scored when
    ``logprobs`` are asked for too."""
    stop = stop_strings(body, limits or LimitsConfig())
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
        constraint=constraint,
        logit_bias=logit_bias(body, n_vocab),
        logprobs=None if logprobs is None else logprobs.top,
        echo=echo,
        prompt_logprobs=logprobs.top if echo and logprobs is not None else None,
    )


def stop_strings(body: SamplingFields, limits: LimitsConfig) -> tuple[str, ...]:
    """``stop`` as a tuple, within ``--max-stop-strings`` and ``--max-stop-length``."""
    stop: tuple[str, ...]
    if body.stop is None:
        stop = ()
    elif isinstance(body.stop, str):
        stop = (body.stop,) if body.stop else ()
    else:
        stop = tuple(s for s in body.stop if s)
    if len(stop) > limits.max_stop_strings:
        raise InvalidRequestError(
            f"{len(stop)} stop strings; this server accepts at most {limits.max_stop_strings} "
            "(--max-stop-strings)", param="stop", code="too_many_stop_strings")
    longest = max((len(s) for s in stop), default=0)
    if longest > limits.max_stop_length:
        raise InvalidRequestError(
            f"a stop string has {longest} characters; this server accepts at most "
            f"{limits.max_stop_length} (--max-stop-length)", param="stop",
            code="stop_too_long")
    return stop


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
