"""Logprobs on the wire, in both dialects (see PROTOCOL.md, "Logprobs: two dialects").

* Together: ``logprobs: k`` (an integer). A chunk's choice carries the sampled token's float
  ``logprobs`` and a ``top_logprobs`` ``{token: logprob}`` dict; a whole response carries
  ``{tokens, token_logprobs, token_ids, top_logprobs}``.
* OpenAI: ``logprobs: true`` with ``top_logprobs: k``; ``logprobs`` is
  ``{"content": [{token, logprob, bytes, top_logprobs: [...]}]}``.

The dialect is told by JSON type (``true`` is a bool, ``1`` an int). A whole (non-streamed)
chat response carries both shapes side by side, which every SDK accepts. Legacy completions
use OpenAI's legacy object, ``{tokens, token_logprobs, top_logprobs, text_offset}`` (plus
Together's ``token_ids``), whichever the dialect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from insieme.api.schemas import SamplingFields
from insieme.engine.types import PromptToken, TokenInfo, TopLogprob

Token = TokenInfo | PromptToken


@dataclass(frozen=True, slots=True)
class LogprobOptions:
    """What a request asked for: the dialect and how many alternatives per token."""

    openai: bool  # logprobs: true (OpenAI) rather than an integer (Together)
    top: int


def options(body: SamplingFields) -> LogprobOptions | None:
    """The request's logprob options, or None when it asked for none."""
    requested, top = body.logprobs, body.top_logprobs
    if isinstance(requested, bool):  # before int: a bool is an int in Python
        return LogprobOptions(openai=True, top=top or 0) if requested else None
    if requested:
        return LogprobOptions(openai=False, top=top if top is not None else requested)
    if top:  # top_logprobs alone: OpenAI's shape, as if logprobs were true
        return LogprobOptions(openai=True, top=top)
    return None


def text_of(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def _top_dict(top: Sequence[TopLogprob]) -> dict[str, float]:
    entries: dict[str, float] = {}
    for alt in top:  # best first: a repeated text keeps its best logprob
        entries.setdefault(text_of(alt.piece), alt.logprob)
    return entries


def _openai_entry(token: Token) -> dict[str, Any]:
    return {
        "token": text_of(token.piece),
        "logprob": token.logprob,
        "bytes": list(token.piece),
        "top_logprobs": [
            {"token": text_of(alt.piece), "logprob": alt.logprob, "bytes": list(alt.piece)}
            for alt in token.top_logprobs
        ],
    }


def together_object(tokens: Sequence[Token], top: int) -> dict[str, Any]:
    return {
        "tokens": [text_of(t.piece) for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "token_ids": [t.id for t in tokens],
        # The first prompt token has no logprob (nothing predicts it), and so no top list.
        "top_logprobs": [None if t.logprob is None else _top_dict(t.top_logprobs)
                         for t in tokens] if top else None,
    }


def chat_object(tokens: Sequence[TokenInfo], opts: LogprobOptions) -> dict[str, Any]:
    """A whole chat choice's ``logprobs``: Together's lists and OpenAI's ``content``."""
    return {**together_object(tokens, opts.top),
            "content": [_openai_entry(t) for t in tokens], "refusal": None}


def completion_object(tokens: Sequence[Token], opts: LogprobOptions,
                      start_offset: int = 0) -> dict[str, Any]:
    """A legacy completion's ``logprobs``; ``text_offset`` counts characters of the text."""
    offsets = []
    offset = start_offset
    for token in tokens:
        offsets.append(offset)
        offset += len(text_of(token.piece))
    return {**together_object(tokens, opts.top), "text_offset": offsets}


def chunk_fields(token: TokenInfo | None, opts: LogprobOptions | None,
                 *, completion: bool = False, offset: int = 0) -> dict[str, Any]:
    """The ``logprobs`` (and Together's ``top_logprobs``) of one streamed choice."""
    if opts is None or token is None:
        return {"logprobs": None}
    if not opts.openai:
        return {"logprobs": token.logprob,
                "top_logprobs": _top_dict(token.top_logprobs) if opts.top else None}
    if completion:
        return {"logprobs": completion_object([token], opts, offset)}
    return {"logprobs": {"content": [_openai_entry(token)], "refusal": None}}
