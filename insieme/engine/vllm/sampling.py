"""insieme's sampling parameters and backend-neutral constraints as vLLM's.

Each choice of a request is its own vLLM request (``n=1``; choice ``i`` seeded ``seed + i``),
so insieme can end one at a stop string without touching its siblings. vLLM returns token
ids and their logprobs (``logprobs=0`` at least: every streamed token shows its own); the
text is insieme's.
"""

from __future__ import annotations

import json
from typing import Any

from insieme.engine.constraints import (
    Choice,
    Constraint,
    JsonObject,
    JsonSchema,
    Regex,
    ToolCall,
    check_schema,
)
from insieme.engine.types import SamplingParams
from insieme.errors import InvalidRequestError


def tool_call_schema(call: ToolCall) -> dict[str, Any]:
    """One ``{"name": ..., "arguments": {...}}`` object calling one of ``call``'s functions."""
    if not call.functions:
        raise InvalidRequestError("a tool call needs at least one function", param=call.param)
    branches = []
    for function in call.functions:
        check_schema(function.parameters, param=function.param)
        branches.append({"type": "object",
                         "properties": {"name": {"const": function.name},
                                        "arguments": function.parameters},
                         "required": ["name", "arguments"]})
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def structured_outputs(constraint: Constraint | None) -> dict[str, Any] | None:
    """The keyword arguments of vLLM's ``StructuredOutputsParams`` for ``constraint``; None
    where the output stays free (no constraint, or a tool call the model may skip: as on the
    llama.cpp backend, the calls are read back out of the text)."""
    if constraint is None:
        return None
    if isinstance(constraint, JsonSchema):
        check_schema(constraint.schema, param=constraint.param)
        return {"json": constraint.schema}
    if isinstance(constraint, JsonObject):
        return {"json_object": True}
    if isinstance(constraint, Regex):
        return {"regex": constraint.pattern}
    if isinstance(constraint, Choice):
        if not constraint.options:
            raise InvalidRequestError("a choice needs at least one option",
                                      param=constraint.param)
        return {"choice": list(constraint.options)}
    if not constraint.forced:
        return None
    elements: list[dict[str, Any]] = []
    if constraint.prefix:
        elements.append({"type": "const_string", "value": constraint.prefix})
    elements.append({"type": "json_schema", "json_schema": tool_call_schema(constraint)})
    if constraint.suffix:
        elements.append({"type": "const_string", "value": constraint.suffix})
    tag = {"type": "structural_tag", "format": {"type": "sequence", "elements": elements}}
    return {"structural_tag": json.dumps(tag)}


def vllm_sampling(params: SamplingParams, choice: int, *, echo_prompt: bool) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``SamplingParams`` for choice ``choice``; the caller
    adds ``structured_outputs`` and the output kind."""
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": max(params.temperature, 0.0),
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else 0,
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": None if params.seed is None else params.seed + choice,
        "max_tokens": params.max_tokens,
        "ignore_eos": params.ignore_eos,
        "logprobs": params.logprobs or 0,
        "detokenize": False,
        "skip_special_tokens": False,
    }
    if params.logit_bias:
        kwargs["logit_bias"] = dict(params.logit_bias)
    if echo_prompt and params.prompt_logprobs is not None:
        kwargs["prompt_logprobs"] = params.prompt_logprobs
    return kwargs
