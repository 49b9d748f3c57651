"""The last step before the engine: the checks every generation request passes, its key's
tokens reserved, the engine asked, its stream wrapped for timing.

The routes build a ``GenerationRequest`` (with ``insieme.api.prompting``) and hand it here;
what fails here is refused before a streamed response has begun, in the contract's shape.
"""

from __future__ import annotations

from insieme.api.context import AppContext
from insieme.api.tracking import RequestRecord, TrackedStream
from insieme.engine.constraints import Regex
from insieme.engine.types import Capability, GenerationRequest
from insieme.errors import InvalidRequestError


async def submit(ctx: AppContext, record: RequestRecord,
                 request: GenerationRequest) -> TrackedStream:
    """Check ``request`` against the server's limits and the key's tokens per minute, submit
    it, and return its stream, timed into ``record``."""
    check_limits(ctx, record, request)
    if record.key is not None:
        record.reservation = ctx.limiter.reserve(record.key, len(request.prompt_tokens),
                                                 request.sampling.max_tokens * request.n)
    try:
        stream = await ctx.engine.submit(request)
    except BaseException:
        ctx.limiter.settle(record.reservation, 0)
        raise
    record.completion_id = request.request_id
    record.n = request.n
    record.prompt_tokens = len(request.prompt_tokens)
    limits = ctx.config.limits
    deadline = None if limits.request_timeout is None else (
        record.arrived + limits.request_timeout)
    tracked = TrackedStream(stream, record, ctx.metrics, ctx.lifecycle.streams, deadline,
                            limits.request_timeout)
    record.streams.append(tracked)
    return tracked


def check_limits(ctx: AppContext, record: RequestRecord, request: GenerationRequest) -> None:
    limits = ctx.config.limits
    info = ctx.engine.info
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
