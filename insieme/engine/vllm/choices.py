"""The choices of one request as vLLM requests: added at submit (so vLLM's refusal of a
constraint is a 400 before anything streams), then each read by a task of its own that puts
the choice's outputs on the request's stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from insieme.engine.stream import RequestStream
from insieme.engine.types import GenerationRequest
from insieme.engine.vllm.decode import ChoiceDecoder, prompt_tokens
from insieme.engine.vllm.sampling import structured_outputs, vllm_sampling
from insieme.engine.vllm.tokens import Tokens
from insieme.errors import InvalidRequestError


@dataclass
class ChoiceRun:
    vllm_id: str  # the id vLLM tracks the choice's request under
    decoder: ChoiceDecoder
    task: asyncio.Task[None]


def _sampling_params(request: GenerationRequest, choice: int) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    sampling = request.sampling
    kwargs = vllm_sampling(sampling, choice, echo_prompt=choice == 0 and sampling.echo)
    structured = structured_outputs(sampling.constraint)
    if structured is not None:
        kwargs["structured_outputs"] = StructuredOutputsParams(**structured)
    return SamplingParams(output_kind=RequestOutputKind.DELTA, **kwargs)


async def start_choices(llm: Any, tokens: Tokens, request: GenerationRequest,
                        stream: RequestStream, *, on_dead: Callable[[str], None]
                        ) -> list[ChoiceRun]:
    """Add each choice of ``request`` to vLLM and start reading it; a request vLLM refuses
    raises ``InvalidRequestError`` (and none of its choices stays in vLLM)."""
    from vllm.exceptions import VLLMValidationError

    added: list[tuple[str, Any]] = []
    sampling = request.sampling
    try:
        for choice in range(request.n):
            params = _sampling_params(request, choice)
            queue = await llm.add_request(f"{request.request_id}-{choice}",
                                          {"prompt_token_ids": request.prompt_tokens}, params)
            added.append((queue.request_id, queue))
    except (VLLMValidationError, ValueError) as exc:
        if added:
            await llm.abort([vllm_id for vllm_id, _ in added], internal=True)
        param = getattr(exc, "parameter", None)
        if sampling.constraint is not None:
            param = sampling.constraint.param
        raise InvalidRequestError(f"vLLM refused the request: {exc}", param=param) from exc
    runs = []
    for choice, (vllm_id, queue) in enumerate(added):
        decoder = ChoiceDecoder(tokens, choice, len(request.prompt_tokens), sampling.stop,
                                sampling.logprobs)
        task = asyncio.create_task(_read(llm, queue, decoder, stream, request, on_dead))
        runs.append(ChoiceRun(vllm_id, decoder, task))
    return runs


async def _read(llm: Any, queue: Any, decoder: ChoiceDecoder, stream: RequestStream,
                request: GenerationRequest, on_dead: Callable[[str], None]) -> None:
    """Put one choice's outputs on ``stream`` until it finishes; a choice that ends at a stop
    string is aborted in vLLM."""
    from vllm.v1.engine.exceptions import EngineDeadError

    sampling = request.sampling
    echo = decoder.index == 0 and sampling.echo
    scored: list[Any] = []  # the prompt's logprobs, as vLLM sends them
    try:
        finished = False
        while not finished:
            out = queue.get_nowait() or await queue.get()
            finished = out.finished
            if out.num_cached_tokens:
                decoder.cached_tokens = out.num_cached_tokens
            if out.prompt_logprobs:
                scored.extend(out.prompt_logprobs)
            if not out.outputs:
                continue
            completion = out.outputs[0]
            outputs = decoder.step(list(completion.token_ids), completion.logprobs,
                                   completion.finish_reason)
            if echo and outputs:
                prompt = prompt_tokens(decoder.tokens, request.prompt_tokens,
                                       scored if sampling.prompt_logprobs is not None else None,
                                       sampling.prompt_logprobs)
                outputs[0] = replace(outputs[0], prompt=prompt)
                echo = False
            for output in outputs:
                stream.put(output)
            if decoder.finished and not finished:  # a stop string: vLLM would go on
                await llm.abort(queue.request_id, internal=True)
                return
    except EngineDeadError as exc:
        on_dead(str(exc) or "EngineDeadError")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one choice's failure must not end the others
        if not decoder.finished:
            stream.put(decoder.fail(f"vLLM failed on this request: {exc}"))
    if not decoder.finished:  # vLLM said finished without a finish reason
        stream.put(decoder.fail("vLLM ended the request without a finish reason"))
