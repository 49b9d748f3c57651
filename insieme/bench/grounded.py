"""The ``grounded`` dataset: tasks whose answer is mostly a copy of a text in the prompt.

Copy, fix the spelling of, rewrite, rename in, convert or sort one of ``TEXTS`` (prose, code,
lists and tables of about 200 tokens), with a few summaries and extractions among them: the
workload on which speculative decoding by prompt lookup pays, since most of the output can be
found in the input. Each request's ``max_tokens`` leaves room for the whole answer (no
``ignore_eos``: the answer ends when the task is done). The order of the tasks and the
spelling mistakes to fix are drawn, seeded, so a seed makes the same requests.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from insieme.bench.grounded_texts import TEXTS, Text
from insieme.bench.prompts import Prompt

SYSTEM_PROMPT = ("Do exactly what the user asks, and reply with the result only: no "
                 "introduction, no explanation and no comment.")
SHORT_ANSWER_TOKENS = 128  # summaries and extractions


@dataclass(frozen=True, slots=True)
class Task:
    """An instruction for some kinds of text; ``length`` is the answer's expected length over
    the text's (None: a short answer), ``typos`` puts spelling mistakes in the text first."""

    kinds: frozenset[str]
    instruction: str  # may name {old} and {new}, a code text's rename pair
    length: float | None = 1.0
    typos: bool = False


def _kinds(*names: str) -> frozenset[str]:
    return frozenset(names)


TASKS = (
    Task(_kinds("prose", "code", "list", "table", "csv"),
         "Repeat the following text exactly, character for character:"),
    Task(_kinds("prose", "list"),
         "Fix the spelling mistakes in this text and return it whole, changing nothing else:",
         typos=True),
    Task(_kinds("prose"), "Rewrite this paragraph in the past tense, changing nothing else:"),
    Task(_kinds("prose"), "Summarise this paragraph in two sentences:", length=None),
    Task(_kinds("prose"), "Extract every number, date and time in this text, one per line:",
         length=None),
    Task(_kinds("code"),
         "Rename `{old}` to `{new}` everywhere in this code and return the whole code:"),
    Task(_kinds("code"), "Add a one-line comment above each function, class or method saying "
         "what it does, and return the whole code:", length=1.3),
    Task(_kinds("list"), "Convert this list to JSON: an array with one string per item.",
         length=1.4),
    Task(_kinds("list"), "Sort the items of this list alphabetically and return the whole list:"),
    Task(_kinds("table"), "Convert this Markdown table to CSV:", length=0.8),
    Task(_kinds("table", "csv"), "Convert this table to JSON: an array with one object per "
         "row, keyed by the column names.", length=2.0),
    Task(_kinds("csv"), "Convert this CSV to a Markdown table:", length=1.3),
)


def grounded_prompts(count: int, seed: int = 0) -> list[Prompt]:
    """``count`` requests: every (text, task) pair in a seeded order, over and over."""
    pairs = [(index, task) for index, text in enumerate(TEXTS) for task in TASKS
             if text.kind in task.kinds]
    rng = random.Random(f"grounded:{seed}")
    rng.shuffle(pairs)
    return [_prompt(TEXTS[index], index, task, seed)
            for index, task in (pairs[i % len(pairs)] for i in range(count))]


def _prompt(text: Text, index: int, task: Task, seed: int) -> Prompt:
    old, new = text.rename or ("", "")
    instruction = task.instruction.format(old=old, new=new)
    body = add_typos(text.body, random.Random(f"typos:{seed}:{index}")) if task.typos \
        else text.body
    if task.length is None:
        max_tokens = SHORT_ANSWER_TOKENS
    else:
        max_tokens = math.ceil(estimate_tokens(body) * task.length) + 32
    return Prompt(({"role": "system", "content": SYSTEM_PROMPT},
                   {"role": "user", "content": f"{instruction}\n\n{body}"}),
                  max_tokens=max_tokens)


_PIECES = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` is: a word, a digit or a symbol is a token or so, with
    a fifth more for the long words split in two. (Within 15% of SmolLM2's count on
    ``TEXTS``; vocabularies that group digits make fewer.)"""
    return math.ceil(1.2 * len(_PIECES.findall(text)))


_LONG_WORD = re.compile(r"\b[A-Za-z]{5,}\b")


def add_typos(text: str, rng: random.Random, every: int = 6) -> str:
    """Swap two neighbouring inner letters in about one long word in ``every``."""

    def swap(match: re.Match[str]) -> str:
        word = match.group()
        if rng.randrange(every):
            return word
        at = rng.randrange(1, len(word) - 2)
        if word[at] == word[at + 1]:
            return word
        return word[:at] + word[at + 1] + word[at] + word[at + 2:]

    return _LONG_WORD.sub(swap, text)
