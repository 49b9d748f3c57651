"""insieme's sampling and constraints as vLLM's parameters (no vLLM needed): what a client
asks for reaches vLLM, and what vLLM cannot be given is refused naming the field."""

from __future__ import annotations

import json

import pytest

from insieme.engine.constraints import Choice, JsonSchema, ToolCall, ToolFunction
from insieme.engine.types import SamplingParams
from insieme.engine.vllm.sampling import structured_outputs, vllm_sampling
from insieme.errors import InvalidRequestError


def test_each_choice_gets_its_own_seed_and_every_token_its_logprob() -> None:
    params = SamplingParams(seed=7, temperature=0.8, max_tokens=5)
    first, second = (vllm_sampling(params, i, echo_prompt=False) for i in (0, 1))
    assert (first["seed"], second["seed"]) == (7, 8)  # n choices differ, yet repeat
    assert first["logprobs"] == 0  # the sampled token's own logprob, for the stream's token
    assert first["detokenize"] is False and first["max_tokens"] == 5
    unseeded = vllm_sampling(SamplingParams(), 1, echo_prompt=False)
    assert unseeded["seed"] is None


def test_echo_scores_the_prompt_only_on_the_first_choice() -> None:
    params = SamplingParams(echo=True, prompt_logprobs=2)
    assert vllm_sampling(params, 0, echo_prompt=True)["prompt_logprobs"] == 2
    assert "prompt_logprobs" not in vllm_sampling(params, 1, echo_prompt=False)


def test_a_forced_tool_call_is_prefix_call_suffix() -> None:
    weather = ToolFunction("get_weather", {"type": "object",
                                           "properties": {"city": {"type": "string"}}})
    tag = json.loads(structured_outputs(ToolCall((weather,)))["structural_tag"])
    first, call, last = tag["format"]["elements"]
    assert first == {"type": "const_string", "value": "<tool_call>\n"}
    assert call["json_schema"]["properties"]["name"] == {"const": "get_weather"}
    assert last == {"type": "const_string", "value": "\n</tool_call>"}
    # tool_choice "auto": the model may answer in text, as on llama.cpp.
    assert structured_outputs(ToolCall((weather,), forced=False)) is None


def test_what_vllm_cannot_take_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidRequestError) as bad:
        structured_outputs(JsonSchema({"type": "no-such-type"}))
    assert bad.value.param == "response_format"
    with pytest.raises(InvalidRequestError) as empty:
        structured_outputs(Choice(()))
    assert empty.value.param == "response_format"
