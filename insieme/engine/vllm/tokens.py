"""The model's Hugging Face tokenizer, as the engine needs it: raw prompts with special token
text parsed, chat prompts where only the template's markup becomes special tokens, and the
bytes of every token (vLLM is asked for token ids only; insieme turns them into text)."""

from __future__ import annotations

import json
import re
from typing import Any

from insieme.engine import tool_prompt
from insieme.engine.chat_template import ChatTemplate
from insieme.engine.types import ChatPrompt

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable bytes stand for themselves,
    the others for 256 + their rank."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_pieces(tokenizer: Any) -> list[bytes]:
    """Every token's own bytes, by id: what its text adds to the output (a special token's
    text spelled out)."""
    decoder_type = (json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}).get(
        "type") if hasattr(tokenizer, "backend_tokenizer") else None
    byte_level = decoder_type == "ByteLevel"
    byte_decoder = _byte_decoder()
    added = {token_id: token.content
             for token_id, token in tokenizer.added_tokens_decoder.items()}
    pieces: list[bytes] = []
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(range(len(tokenizer)))):
        if token_id in added:
            pieces.append(added[token_id].encode())
        elif token is None:
            pieces.append(b"")
        elif byte_level and all(ch in byte_decoder for ch in token):
            pieces.append(bytes(byte_decoder[ch] for ch in token))
        elif match := _BYTE_TOKEN.fullmatch(token):
            pieces.append(bytes([int(match.group(1), 16)]))
        else:
            pieces.append(token.replace("\u2581", " ").encode())
    return pieces


class Tokens:
    """One loaded tokenizer with the lookups the engine makes per token."""

    def __init__(self, tokenizer: Any, n_vocab: int = 0) -> None:
        self.tokenizer = tokenizer
        self.pieces = token_pieces(tokenizer)
        # The model's vocabulary may be padded past the tokenizer's: ids with no text.
        self.pieces += [b""] * (n_vocab - len(self.pieces))
        special = {token_id: token.content
                   for token_id, token in tokenizer.added_tokens_decoder.items()
                   if token.special}
        self.special_ids = frozenset(special) | frozenset(tokenizer.all_special_ids)
        # Longest first, as a tokenizer matches them: the texts only a template may write.
        self.special_texts = sorted(set(special.values()), key=len, reverse=True)
        self._special_by_text = {text: token_id for token_id, text in special.items()}
        bos = tokenizer.bos_token_id
        self.bos_id: int | None = bos if bos is not None and tokenizer(
            "a", add_special_tokens=True).input_ids[:1] == [bos] else None
        source = tokenizer.chat_template
        if isinstance(source, dict):  # several named templates: the default one
            source = source.get("default") or next(iter(source.values()), None)
        self.template = ChatTemplate(source, bos_token=tokenizer.bos_token or "",
                                     eos_token=tokenizer.eos_token or "",
                                     special_texts=self.special_texts)

    @property
    def n_vocab(self) -> int:
        return len(self.pieces)

    def _with_bos(self, tokens: list[int]) -> list[int]:
        # A BOS when the model wants one, unless the prompt starts with it already: never two.
        if self.bos_id is not None and tokens[:1] != [self.bos_id]:
            tokens.insert(0, self.bos_id)
        return tokens

    def encode(self, text: str, *, add_special: bool = True) -> list[int]:
        """A raw prompt's tokens, special token text parsed (its caller wrote the whole
        prompt), with ``add_special`` a BOS first when the model wants one."""
        tokens = list(self.tokenizer.encode(text, add_special_tokens=False))
        return self._with_bos(tokens) if add_special else tokens

    def plain(self, text: str) -> list[int]:
        """``text`` as text only: special token spellings in it stay text."""
        return list(self.tokenizer.encode(text, add_special_tokens=False,
                                          split_special_tokens=True))

    def encode_marked(self, text: str, markup: str) -> list[int]:
        """The tokens of ``text``, with special tokens only where ``markup`` (``text`` with
        client characters masked) spells them."""
        if len(markup) != len(text):
            raise ValueError("markup must be as long as the text")
        tokens: list[int] = []
        start = 0
        if self.special_texts:
            pattern = re.compile("|".join(map(re.escape, self.special_texts)))
            for match in pattern.finditer(markup):
                if match.start() > start:
                    tokens += self.plain(text[start:match.start()])
                tokens.append(self._special_by_text[match.group()])
                start = match.end()
        if start < len(text):
            tokens += self.plain(text[start:])
        return tokens

    def chat(self, messages: list[dict[str, Any]],
             tools: list[dict[str, Any]] | None = None) -> ChatPrompt:
        """A conversation rendered and tokenised: only the template's own markup becomes
        special tokens, whatever the messages and tools spell."""
        messages, tools = tool_prompt.prepare(self.template, messages, tools)
        marked = self.template.render_marked(messages, tools=tools)
        return ChatPrompt(marked.text, self._with_bos(self.encode_marked(marked.text,
                                                                         marked.markup)))
