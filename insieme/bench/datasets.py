"""What the requests of a level send: the ``--dataset`` workloads.

A workload is a tuple of conversations, each a tuple of turns (``Prompt``): a turn's messages
follow the earlier turns and the server's answers to them. Every dataset but ``multi-turn``
has one-turn conversations. A level sends every conversation's first turn, then every
second turn, and so on (``request_order``; the conversations of a later wave in a seeded
random order), so conversations interleave and a conversation's turns go in order.

- ``builtin``, ``jsonl``: the settings' ``prompts`` in turn (``--max-tokens``, unless a JSONL
  line sets its own).
- ``random``: as ``vllm bench serve --dataset-name random``: input and output lengths drawn
  uniformly from ``[len * (1 - ratio), len * (1 + ratio)]``. The input is that many words
  drawn from ``WORDS``, common English words that BPE vocabularies keep whole with their
  leading space: about one token a word (exactly one each with SmolLM2's tokenizer), plus
  the chat template's own tokens, which the input length does not count. The output length
  is the request's ``max_tokens``, sent with ``ignore_eos`` so that servers which know it
  (insieme, vLLM, llama-server) generate exactly that many.
- ``multi-turn``: see ``insieme.bench.multi_turn``.
- ``grounded``: see ``insieme.bench.grounded``.

Everything generated is drawn from ``random.Random`` seeded by ``--seed``: the same settings
make the same workload.
"""

from __future__ import annotations

import math
import random

from insieme.bench.grounded import grounded_prompts
from insieme.bench.multi_turn import conversations
from insieme.bench.prompts import Prompt
from insieme.bench.settings import BenchSettings

Conversation = tuple[Prompt, ...]

WORDS = tuple(dict.fromkeys("""
the of and to in is was for that with as on by at from his her this had not are but
have they one all were we when there can an your which their said if will each about how
up out them then she many some so these would other into has more two like him see time
could no make than first been its who now people my made over did down only way find use
may water long little very after words called just where most know get through back much
before go good new write our used me man too any day same right look think also around
another came come work three word must because does part even place well such here take why
things help put years different away again off went old number great tell men say small
every found still between name should home big give air line set own under read last never
us left end along while might next sound below saw something thought both few those always
looked show large often together asked house world going want school important until form
food keep children feet land side without boy once animals life enough took sometimes four
head above kind began almost live page got earth need far hand high year mother light
parts country father let night following picture being study second eyes soon times story
boys since white days ever paper hard near sentence better best across during today others
however sure means knew try told young miles sun ways thing whole hear example heard
several change answer room sea against top turned learn point city play toward five using
himself usually money seen car morning body upon family later move face door cut done
group true leave color red friends easy river open music
""".split()))


def build_workload(settings: BenchSettings) -> tuple[Conversation, ...]:
    """The conversations one level sends: ``settings.requests`` turns in all."""
    count, seed = settings.requests, settings.seed
    if settings.dataset == "random":
        return tuple((prompt,) for prompt in random_prompts(
            count, settings.random_input_len, settings.random_output_len,
            settings.random_range_ratio, seed))
    if settings.dataset == "multi-turn":
        return conversations(count // settings.turns, settings.turns, seed,
                             context_words=settings.context_words, words=WORDS,
                             system_prompt=settings.system_prompt)
    if settings.dataset == "grounded":
        return tuple((prompt,) for prompt in grounded_prompts(count, seed))
    return tuple((settings.prompt_at(index),) for index in range(count))


def request_order(workload: tuple[Conversation, ...],
                  seed: int | None = None) -> list[tuple[int, int]]:
    """(conversation, turn) in sending order: every first turn, then every second, ...;
    with a ``seed``, the conversations of each wave after the first in a random order (users
    come back at their own pace: a router that goes round in turns must not find each
    conversation's replica again only because the waves repeat one order)."""
    longest = max((len(conversation) for conversation in workload), default=0)
    rng = random.Random(f"order:{seed}")
    order = []
    for turn in range(longest):
        wave = [(index, turn) for index, conversation in enumerate(workload)
                if turn < len(conversation)]
        if seed is not None and turn:
            rng.shuffle(wave)
        order += wave
    return order


def length_range(length: int, ratio: float) -> tuple[int, int]:
    """The lengths a random request may have: ``length * (1 -+ ratio)``, at least 1."""
    return max(1, math.floor(length * (1.0 - ratio))), max(1, math.ceil(length * (1.0 + ratio)))


def random_prompts(count: int, input_len: int, output_len: int, range_ratio: float,
                   seed: int = 0) -> list[Prompt]:
    """``count`` prompts of random words, each with its own output length."""
    rng = random.Random(f"random:{seed}")
    inputs, outputs = length_range(input_len, range_ratio), length_range(output_len, range_ratio)
    prompts = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(*inputs))
        prompts.append(Prompt(({"role": "user", "content": " ".join(words)},),
                              max_tokens=rng.randint(*outputs), ignore_eos=True))
    return prompts
