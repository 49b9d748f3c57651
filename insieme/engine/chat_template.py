"""Chat templates from the GGUF metadata, rendered in a sandboxed jinja2 environment.

A template interpolates client text (message content, names, tool calls and results, the
tools themselves) between its own markup. Only the markup may become special tokens: a
message that spells ``<|im_end|><|im_start|>system`` must stay text, or a user could write
the system prompt. ``render_marked`` tells the two apart by rendering the conversation a
second time with every special token spelling in client text masked (same length, so the
template treats it alike); the special token texts left in that rendering are the
template's own, at the same places as in the real one. A template that reads the special
text itself, so that the two renderings differ elsewhere, gets the request refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from insieme.errors import ConfigError, InvalidRequestError

# Used only when a model file carries no template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '')"
    " + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_WHITESPACE = frozenset(" \t\n\v\f\r")


class TemplateRaised(Exception):
    """The template called ``raise_exception``: the conversation breaks its rules."""


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # Hugging Face templates expect unescaped, non-ASCII-preserving JSON.
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(frozen=True, slots=True)
class MarkedPrompt:
    """A rendered conversation and its markup.

    ``markup`` is ``text`` with every character of client text that could spell a special
    token masked, and the same length; the special token texts ``markup`` spells are exactly
    the template's own, at the same offsets as in ``text``.
    """

    text: str
    markup: str


class _Mask:
    """Masks the special token texts in client strings: each occurrence, and a start or end
    of the string that a template's literal could complete into one."""

    def __init__(self, special_texts: Collection[str]) -> None:
        self.texts = sorted({t for t in special_texts if t}, key=len, reverse=True)
        # Private use: no case, not whitespace, never escaped by tojson: filters treat it as
        # they treat the special text it stands for.
        self.char = next(chr(c) for c in range(0xE000, 0xF900)
                         if not any(chr(c) in t for t in self.texts))
        self._heads = {t[:k] for t in self.texts for k in range(1, len(t))}
        self._tails = {t[k:] for t in self.texts for k in range(1, len(t))}
        self._longest = max(map(len, self.texts), default=0)
        self._first_chars = {t[0] for t in self.texts}

    def pattern(self, strings: list[str]) -> re.Pattern[str] | None:
        """The special texts that occur in these client strings, as one pattern."""
        joined = "\0".join(strings)
        if not self._first_chars & set(joined):
            return None
        found = [t for t in self.texts if t in joined]
        return re.compile("|".join(map(re.escape, found))) if found else None

    def apply(self, text: str, pattern: re.Pattern[str] | None) -> str:
        if pattern is not None:
            text = pattern.sub(lambda m: self.char * len(m.group()), text)
        return self._mask_edges(text)

    def _mask_edges(self, text: str) -> str:
        head = next((k for k in range(min(self._longest - 1, len(text)), 0, -1)
                     if text[:k] in self._tails), 0)
        tail = next((k for k in range(min(self._longest - 1, len(text)), 0, -1)
                     if text[-k:] in self._heads), 0)
        if not head and not tail:
            return text
        chars = list(text)
        for i in (*range(head), *range(len(text) - tail, len(text))):
            if chars[i] not in _WHITESPACE:
                chars[i] = self.char
        return "".join(chars)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _masked(value: Any, mask: _Mask, pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return mask.apply(value, pattern)
    if isinstance(value, dict):
        return {mask.apply(k, pattern) if isinstance(k, str) else k: _masked(v, mask, pattern)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(item, mask, pattern) for item in value)
    return value


def _aligned(text: str, markup: str, mask_char: str) -> bool:
    """Whether ``markup`` is ``text`` with only some characters masked."""
    if len(text) != len(markup):
        return False
    start = 0
    for run in re.finditer(re.escape(mask_char) + "+", markup):
        if text[start:run.start()] != markup[start:run.start()]:
            return False
        start = run.end()
    return text[start:] == markup[start:]


class ChatTemplate:
    """Renders a conversation into the prompt text the model was trained on.

    ``special_texts`` are the texts of the special tokens only the template may write (the
    vocabulary's control tokens); ``render_marked`` keeps client text from spelling them.
    """

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "",
                 special_texts: Collection[str] = ()) -> None:
        self.source = source or CHATML_TEMPLATE
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._mask = _Mask(special_texts)
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined
        )
        env.globals["raise_exception"] = _raise_exception
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"the model's chat template does not parse: {exc}") from exc

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        now: _dt.datetime | None = None,
    ) -> str:
        """The prompt text; ``strftime_now`` in the template reads ``now`` (default: now)."""
        clock = now or _dt.datetime.now()
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=tools,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                strftime_now=clock.strftime,
            )
        except TemplateRaised as exc:
            raise InvalidRequestError(
                f"the model's chat template rejected the messages: {exc}", param="messages"
            ) from exc
        except (jinja2.TemplateError, TypeError, ValueError, KeyError) as exc:
            raise InvalidRequestError(
                f"the messages could not be rendered with the model's chat template: {exc}",
                param="messages",
            ) from exc

    def render_marked(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> MarkedPrompt:
        """The rendered text and its markup (see ``MarkedPrompt``)."""
        now = _dt.datetime.now()  # both renderings on one clock, a date in them alike
        text = self.render(messages, add_generation_prompt=add_generation_prompt, tools=tools,
                           now=now)
        mask = self._mask
        if not mask.texts:
            return MarkedPrompt(text, text)
        pattern = mask.pattern([*_strings(messages), *_strings(tools)])
        masked_messages = _masked(messages, mask, pattern)
        masked_tools = _masked(tools, mask, pattern)
        if masked_messages == messages and masked_tools == tools:
            return MarkedPrompt(text, text)  # nothing to mask: the common case, one render
        markup = self.render(masked_messages, add_generation_prompt=add_generation_prompt,
                             tools=masked_tools, now=now)
        if not _aligned(text, markup, mask.char):
            # The template reads the special text itself (splits on it, say): there is no
            # telling its markup from the client's text, so refuse rather than guess.
            raise InvalidRequestError(
                "the messages contain special token text that this model's chat template "
                "treats as markup; remove it from the messages", param="messages")
        return MarkedPrompt(text, markup)
