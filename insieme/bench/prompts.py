"""The chat prompts a benchmark sends: a small built-in set, or a JSONL file.

A JSONL line is either ``{"messages": [{"role": ..., "content": ...}, ...]}`` (a chat, as the
API takes it) or ``{"prompt": "text"}`` (one user message), with an optional
``"max_tokens": N`` of its own. Blank lines are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insieme.errors import ConfigError

Messages = tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request's chat, with the ``max_tokens`` and ``ignore_eos`` its dataset gives it
    (``None``: the benchmark's ``--max-tokens``)."""

    messages: Messages
    max_tokens: int | None = None
    ignore_eos: bool = False


def as_prompt(item: Messages | Prompt) -> Prompt:
    """A bare message list is a ``Prompt`` with no limits of its own."""
    return item if isinstance(item, Prompt) else Prompt(tuple(item))

_SYSTEM = "You are a helpful assistant. Answer clearly."

# Varied on purpose: short and long prompts, with and without a system message, questions
# that invite short answers and ones that invite long ones, so prefill and decode both show.
_BUILTIN: tuple[tuple[str | None, str], ...] = (
    (None, "What is the capital of France?"),
    (_SYSTEM, "Explain in a few sentences how a hash table works."),
    (None, "Write a short poem about the sea at night."),
    (_SYSTEM, "List five tips for writing readable Python code, one line each."),
    (None, "Translate into Italian: 'The weather is lovely today, let us go for a walk.'"),
    ("You are a patient maths tutor.",
     "A train leaves at 9:40 and arrives at 13:05. How long is the journey? Show the steps."),
    (None, "Summarise the plot of Romeo and Juliet in three sentences."),
    (_SYSTEM,
     "I am planning a three-day trip to Rome in spring. I like history, food and long walks, "
     "but I do not enjoy crowded places. Suggest a plan for each day, with a morning, an "
     "afternoon and an evening activity, and say which places are best visited early."),
    (None, "What is the difference between a list and a tuple in Python?"),
    ("You are a concise assistant. Reply in one paragraph.",
     "Why is the sky blue? Mention Rayleigh scattering."),
    (None, "Give me a recipe for a simple tomato pasta sauce."),
    (_SYSTEM,
     "Here is a function:\n\ndef mean(xs):\n    total = 0\n    for x in xs:\n"
     "        total += x\n    return total / len(xs)\n\nWhat happens when xs is empty, and "
     "how would you change the function to handle it?"),
)


def builtin_prompts() -> list[Messages]:
    """The built-in prompts as chat message lists."""
    return [_chat(system, user) for system, user in _BUILTIN]


def load_prompts(path: str | Path) -> list[Messages]:
    """Read prompts from a JSONL file; a bad line is a ``ConfigError`` naming it."""
    return [prompt.messages for prompt in load_prompt_file(path)]


def load_prompt_file(path: str | Path) -> list[Prompt]:
    """``load_prompts``, keeping each line's own ``max_tokens``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--prompts: cannot read {path}: {exc}") from exc
    prompts: list[Prompt] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompts.append(_parse_line(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as exc:
            raise ConfigError(f"--prompts: {path} line {number}: {exc}") from exc
    if not prompts:
        raise ConfigError(f"--prompts: {path} has no prompts")
    return prompts


def _parse_line(item: Any) -> Prompt:
    max_tokens = item.get("max_tokens") if isinstance(item, dict) else None
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise ValueError("max_tokens must be a whole number of at least 1")
    return Prompt(_parse_messages(item), max_tokens)


def _parse_messages(item: Any) -> Messages:
    if isinstance(item, dict) and isinstance(item.get("prompt"), str):
        return _chat(None, item["prompt"])
    if isinstance(item, dict) and isinstance(item.get("messages"), list) and item["messages"]:
        messages = []
        for message in item["messages"]:
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str)):
                raise ValueError("each message needs a string 'role' and 'content'")
            messages.append({"role": message["role"], "content": message["content"]})
        return tuple(messages)
    raise ValueError('expected {"messages": [...]} or {"prompt": "..."}')


def _chat(system: str | None, user: str) -> Messages:
    head = ({"role": "system", "content": system},) if system else ()
    return (*head, {"role": "user", "content": user})
