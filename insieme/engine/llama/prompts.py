"""Prompts as a GGUF model reads them: a raw prompt tokenised, a conversation rendered with
the chat template in the model's metadata and tokenised so that only the template's own
markup becomes special tokens. The engine uses it over its runtime; the ingress in front of
Ray replicas over a vocabulary-only load of the same file, with the same result."""

from __future__ import annotations

from typing import Any

from insieme.engine import tool_prompt
from insieme.engine.chat_template import ChatTemplate
from insieme.engine.llama.vocab import LlamaVocab
from insieme.engine.types import ChatPrompt


def model_template(vocab: LlamaVocab) -> ChatTemplate:
    """The chat template in the model's metadata, with its BOS and EOS texts."""
    eos_id = vocab.meta("tokenizer.ggml.eos_token_id")
    return ChatTemplate(
        vocab.meta("tokenizer.chat_template"),
        bos_token=vocab.token_text(vocab.bos_id) if vocab.bos_id >= 0 else "",
        eos_token=vocab.token_text(int(eos_id)) if eos_id else "",
        special_texts=vocab.control_texts)


class LlamaPrompts:
    """Tokenise and render chats for one model (blocking: call it off the event loop)."""

    def __init__(self, vocab: LlamaVocab, template: ChatTemplate | None = None) -> None:
        self.vocab = vocab
        self.template = template or model_template(vocab)

    def _with_bos(self, tokens: list[int]) -> list[int]:
        # A BOS when the model wants one, unless the prompt starts with it already (a
        # template that writes bos_token, a raw prompt that spells it): never two.
        if self.vocab.add_bos and tokens[:1] != [self.vocab.bos_id]:
            tokens.insert(0, self.vocab.bos_id)
        return tokens

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """A raw prompt's tokens, special token text parsed (its caller wrote the whole
        prompt), with ``add_special`` a BOS first when the model wants one."""
        tokens = self.vocab.tokenize(text, add_special=False)
        return self._with_bos(tokens) if add_special else tokens

    def render_chat(self, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None = None) -> ChatPrompt:
        """A conversation rendered and tokenised: only the template's own markup becomes
        special tokens, whatever the messages and tools spell; a BOS first when the model
        wants one."""
        messages, tools = tool_prompt.prepare(self.template, messages, tools)
        marked = self.template.render_marked(messages, tools=tools)
        tokens = self.vocab.tokenize_marked(marked.text, marked.markup)
        return ChatPrompt(marked.text, self._with_bos(tokens))
