"""The --dataset workloads: random lengths, multi-turn conversations, grounded tasks."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from insieme.bench.datasets import (
    WORDS,
    build_workload,
    length_range,
    random_prompts,
    request_order,
)
from insieme.bench.grounded import SHORT_ANSWER_TOKENS, TASKS, add_typos, grounded_prompts
from insieme.bench.grounded_texts import TEXTS
from insieme.bench.multi_turn import QUESTIONS, SYSTEM_PROMPT
from insieme.bench.prompts import Prompt, load_prompt_file
from insieme.bench.settings import BenchSettings


def settings(**changes: Any) -> BenchSettings:
    return BenchSettings(**{"base_url": "http://h/v1", "model": "m", "concurrency": (1,),
                            "requests": 12, **changes})


def user_text(prompt: Prompt) -> str:
    return prompt.messages[-1]["content"]


@pytest.mark.parametrize(("length", "ratio", "bounds"), [
    (256, 0.0, (256, 256)), (256, 0.5, (128, 384)), (100, 0.25, (75, 125)), (1, 0.9, (1, 2)),
])
def test_length_range(length: int, ratio: float, bounds: tuple[int, int]) -> None:
    assert length_range(length, ratio) == bounds


def test_random_lengths_stay_in_the_range_and_fill_it() -> None:
    prompts = random_prompts(400, input_len=64, output_len=32, range_ratio=0.5, seed=0)
    inputs = [len(user_text(p).split()) for p in prompts]
    outputs = [p.max_tokens or 0 for p in prompts]
    assert min(inputs) >= 32 and max(inputs) <= 96
    assert min(outputs) >= 16 and max(outputs) <= 48
    # Uniform over the range: both ends are reached, and the mean sits in the middle.
    assert min(inputs) <= 34 and max(inputs) >= 94
    assert sum(inputs) / len(inputs) == pytest.approx(64, rel=0.05)
    assert all(p.ignore_eos for p in prompts)
    assert {word for p in prompts for word in user_text(p).split()} <= set(WORDS)


def test_random_without_a_range_is_exact() -> None:
    prompts = random_prompts(10, input_len=20, output_len=7, range_ratio=0.0)
    assert {len(user_text(p).split()) for p in prompts} == {20}
    assert {p.max_tokens for p in prompts} == {7}
    assert len({user_text(p) for p in prompts}) == 10  # no two prompts alike


def test_random_prompts_are_reproducible_by_seed() -> None:
    assert random_prompts(5, 30, 10, 0.3, seed=1) == random_prompts(5, 30, 10, 0.3, seed=1)
    assert random_prompts(5, 30, 10, 0.3, seed=1) != random_prompts(5, 30, 10, 0.3, seed=2)


def test_every_dataset_makes_the_requests_asked_for() -> None:
    for dataset in ("builtin", "random", "grounded"):
        workload = build_workload(settings(dataset=dataset))
        assert len(workload) == 12 and all(len(c) == 1 for c in workload)
    workload = build_workload(settings(dataset="multi-turn", turns=3))
    assert len(workload) == 4 and all(len(c) == 3 for c in workload)
    assert len(request_order(workload)) == 12


def test_builtin_prompts_go_in_turn() -> None:
    s = settings(requests=13)
    workload = build_workload(s)
    assert [c[0].messages for c in workload] == [s.prompt_at(i).messages for i in range(13)]
    assert workload[0][0].messages == workload[len(s.prompts)][0].messages


def test_jsonl_lines_keep_their_own_max_tokens(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "max_tokens": 7}\n{"prompt": "b"}\n', encoding="utf-8")
    s = settings(dataset="jsonl", prompts=tuple(load_prompt_file(path)),
                 prompts_source=str(path), requests=2)
    assert [c[0].max_tokens for c in build_workload(s)] == [7, None]
    assert [s.payload(i)["max_tokens"] for i in range(2)] == [7, 128]


def test_request_order_interleaves_conversations_and_keeps_turns_in_order() -> None:
    a, b = Prompt(({"role": "user", "content": "a"},)), Prompt(({"role": "user", "content": "b"},))
    assert request_order(((a, a, a), (b,), (b, b))) == [
        (0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]


def test_later_waves_come_back_in_a_seeded_random_order() -> None:
    a = Prompt(({"role": "user", "content": "a"},))
    workload = tuple((a, a, a) for _ in range(16))
    order = request_order(workload, seed=1)
    assert order[:16] == [(i, 0) for i in range(16)]  # the first wave as listed
    waves = [[index for index, turn in order if turn == t] for t in range(3)]
    assert all(sorted(wave) == list(range(16)) for wave in waves)
    assert waves[1] != waves[0] and waves[2] != waves[1]
    assert order == request_order(workload, seed=1) != request_order(workload, seed=2)


def test_multi_turn_conversations_share_the_system_prompt() -> None:
    workload = build_workload(settings(dataset="multi-turn", turns=4, requests=32, seed=5))
    assert len(workload) == 8
    for conversation in workload:
        first, *later = conversation
        assert [m["role"] for m in first.messages] == ["system", "user"]
        assert first.messages[0]["content"] == SYSTEM_PROMPT
        assert all([m["role"] for m in turn.messages] == ["user"] for turn in later)
        assert len({user_text(turn) for turn in later}) == 3  # no follow-up said twice
    assert len({user_text(c[0]) for c in workload}) > 1
    again = build_workload(settings(dataset="multi-turn", turns=4, requests=32, seed=5))
    assert again == workload


def test_multi_turn_context_words_give_each_conversation_its_own_document() -> None:
    plain = build_workload(settings(dataset="multi-turn", turns=2, requests=16, seed=3))
    workload = build_workload(settings(dataset="multi-turn", turns=2, requests=16, seed=3,
                                       context_words=120))
    documents = set()
    for conversation in workload:
        first = conversation[0]
        assert first.messages[0]["content"] == SYSTEM_PROMPT
        notes, question = user_text(first).split("\n\n")
        document = notes.split("\n", 1)[1].split()
        assert len(document) == 120 and set(document) <= set(WORDS)
        documents.add(" ".join(document))
        assert question in QUESTIONS
    assert len(documents) == 8  # no two conversations share theirs
    # Without it, the same questions and follow-ups, with no document.
    assert all("notes" not in user_text(c[0]) for c in plain)
    assert [user_text(c[0]) for c in plain] == [
        user_text(c[0]).split("\n\n")[1] for c in workload]


def test_multi_turn_without_the_system_prompt_shares_nothing_but_the_template() -> None:
    shared = build_workload(settings(dataset="multi-turn", turns=2, requests=16, seed=3,
                                     context_words=50))
    private = build_workload(settings(dataset="multi-turn", turns=2, requests=16, seed=3,
                                      context_words=50, system_prompt=False))
    for with_it, without in zip(shared, private, strict=True):
        assert [m["role"] for m in without[0].messages] == ["user"]
        assert without[0].messages[0] == with_it[0].messages[1]  # same document, question
        assert without[1:] == with_it[1:]


def test_grounded_items_contain_their_text() -> None:
    prompts = grounded_prompts(200, seed=0)
    texts = {t.body for t in TEXTS}
    copies, verbatim = 0, set()
    for prompt in prompts:
        system, user = prompt.messages
        assert system["role"] == "system" and user["role"] == "user"
        instruction, _, body = user["content"].partition("\n\n")
        assert instruction.endswith((":", "."))
        assert prompt.max_tokens is not None and not prompt.ignore_eos
        if "spelling" in instruction:
            # A copy of one of the texts with some letters swapped: same length, same letters.
            original = next(t for t in texts if sorted(t) == sorted(body))
            assert body != original and len(body) == len(original)
        else:
            assert body in texts
            verbatim.add(body)
        if prompt.max_tokens > SHORT_ANSWER_TOKENS:
            copies += 1
            assert prompt.max_tokens > len(body.split())  # room for the whole text again
    # Mostly answers that copy the text, every text used, and the order drawn by the seed.
    assert copies / len(prompts) > 0.7
    assert verbatim == texts
    assert grounded_prompts(20, seed=0) == prompts[:20]
    assert grounded_prompts(20, seed=1) != prompts[:20]


def test_grounded_tasks_cover_every_kind_of_text() -> None:
    for text in TEXTS:
        tasks = [task for task in TASKS if text.kind in task.kinds]
        assert len(tasks) >= 3, text.kind
        if text.kind == "code":
            assert text.rename is not None and text.rename[0] in text.body


def test_typos_swap_letters_inside_words() -> None:
    text = TEXTS[0].body
    typoed = add_typos(text, random.Random(0))
    assert typoed == add_typos(text, random.Random(0))
    changed = [(a, b) for a, b in zip(text.split(), typoed.split(), strict=True) if a != b]
    assert 3 <= len(changed) <= len(text.split()) // 3
    for before, after in changed:
        assert sorted(before) == sorted(after) and before[0] == after[0]
