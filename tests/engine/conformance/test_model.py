"""What an engine says about its model, and how it turns text into the model's tokens."""

from __future__ import annotations

import pytest

from insieme.engine.base import Engine
from insieme.engine.types import Capability, ChatPrompt

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_info_describes_the_model(engine: Engine) -> None:
    info = engine.info
    assert isinstance(info.name, str) and info.name
    assert info.max_model_len > 0
    assert info.n_vocab > 0
    assert info.max_num_seqs >= 1
    assert isinstance(info.capabilities, frozenset)
    assert all(isinstance(capability, Capability) for capability in info.capabilities)


async def test_tokenize_gives_ids_in_the_vocabulary(engine: Engine) -> None:
    tokens = await engine.tokenize("The quick brown fox jumps over the lazy dog.")
    assert tokens
    assert all(0 <= token < engine.info.n_vocab for token in tokens)


async def test_render_chat_holds_the_conversation(engine: Engine) -> None:
    system, question = "You answer in one word.", "What colour is the sky?"
    prompt = await engine.render_chat([{"role": "system", "content": system},
                                       {"role": "user", "content": question}])
    assert isinstance(prompt, ChatPrompt)
    assert prompt.tokens
    assert all(0 <= token < engine.info.n_vocab for token in prompt.tokens)
    assert system in prompt.text and question in prompt.text
    assert prompt.text.index(system) < prompt.text.index(question)
