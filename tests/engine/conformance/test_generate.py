"""Generation as a client sees it: streamed tokens and text, the finish and its counters,
``max_tokens``, stop strings, ``n`` choices, and greedy decoding that repeats itself."""

from __future__ import annotations

import pytest

from insieme.engine.base import Engine
from insieme.engine.types import FinishReason, GenerationRequest, SamplingParams
from insieme.errors import InvalidRequestError
from tests.engine.conformance.streams import chat_prompt, generate, greedy, request_id

pytestmark = pytest.mark.asyncio(loop_scope="package")

QUESTION = "Tell me about the moon."


async def test_outputs_stream_tokens_and_end_with_the_counts(engine: Engine) -> None:
    prompt = await chat_prompt(engine, QUESTION)
    [choice] = await generate(engine, prompt, greedy(12))
    assert all(output.index == 0 for output in choice.outputs)
    assert choice.tokens and choice.text
    for token in choice.tokens:
        assert 0 <= token.id < engine.info.n_vocab
        assert token.logprob <= 0.0
        assert isinstance(token.text, str)
    assert [output.finish_reason for output in choice.outputs[:-1]] == [None] * (
        len(choice.outputs) - 1)
    last = choice.last
    assert last.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
    assert last.prompt_tokens == len(prompt)
    assert last.completion_tokens == len(choice.tokens)


async def test_max_tokens_is_honoured(engine: Engine) -> None:
    prompt = await chat_prompt(engine, QUESTION)
    [choice] = await generate(engine, prompt, greedy(5, ignore_eos=True))
    assert choice.last.finish_reason is FinishReason.LENGTH
    assert len(choice.tokens) == 5
    assert choice.last.completion_tokens == 5


async def test_a_stop_string_ends_the_text_before_it(engine: Engine) -> None:
    prompt = await chat_prompt(engine, QUESTION)
    [free] = await generate(engine, prompt, greedy(16))
    words = free.text.split()
    assert len(words) >= 2, f"too short to pick a stop string from: {free.text!r}"
    stop = words[len(words) // 2]  # text this backend writes, whatever its model
    [stopped] = await generate(engine, prompt, greedy(16, stop=(stop,)))
    assert stopped.last.finish_reason is FinishReason.STOP
    assert stop not in stopped.text
    assert stopped.text == free.text[: free.text.index(stop)]


async def test_each_of_n_choices_finishes(engine: Engine) -> None:
    n = min(3, engine.info.max_num_seqs)
    prompt = await chat_prompt(engine, QUESTION)
    choices = await generate(engine, prompt, SamplingParams(temperature=0.8, seed=7,
                                                            max_tokens=8), n=n)
    assert [choice.outputs[0].index for choice in choices] == list(range(n))
    for choice in choices:
        finishes = [output.finish_reason for output in choice.outputs]
        assert finishes[-1] is not None and finishes.count(None) == len(finishes) - 1
        assert choice.last.prompt_tokens == len(prompt)
        assert choice.last.completion_tokens == len(choice.tokens) <= 8


async def test_n_above_max_num_seqs_is_refused(engine: Engine) -> None:
    prompt = await chat_prompt(engine, QUESTION)
    request = GenerationRequest(request_id(), prompt, greedy(4), n=engine.info.max_num_seqs + 1)
    try:
        stream = await engine.submit(request)
    except InvalidRequestError as refused:
        assert refused.param == "n"
    else:
        await stream.aclose()  # so the request does not linger for the tests after this one
        pytest.fail(f"n={request.n} was taken, above max_num_seqs={engine.info.max_num_seqs}")


async def test_greedy_decoding_repeats_itself(engine: Engine) -> None:
    prompt = await chat_prompt(engine, QUESTION)
    [first] = await generate(engine, prompt, greedy(12))
    [second] = await generate(engine, prompt, greedy(12))
    assert second.text == first.text
    assert [token.id for token in second.tokens] == [token.id for token in first.tokens]
