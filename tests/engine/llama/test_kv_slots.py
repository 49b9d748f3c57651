"""Slot placement and the prefix cache, on a stand-in for llama.cpp's KV memory (each
sequence id holds a list of tokens; copies and removals act on it as llama.cpp's do on cells).
The real model's behaviour is covered in ``test_batching.py``; here the cases are exact."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from insieme.engine.llama import kv_slots
from insieme.engine.llama.kv_slots import SlotManager
from insieme.engine.llama.sequence import Sequence
from insieme.engine.types import GenerationRequest, SamplingParams

N_SLOTS = 16


@dataclass
class FakeKV:
    """The KV-memory calls SlotManager makes, on token lists."""

    kv_unified: bool = False
    n_ctx_seq: int = 1024
    cells: dict[int, list[int]] = field(default_factory=lambda: {i: [] for i in range(N_SLOTS)})
    copies: int = 0

    @property
    def shape(self) -> SimpleNamespace:
        return SimpleNamespace(kv_unified=self.kv_unified)

    def seq_rm(self, seq: int, p0: int, p1: int) -> None:
        assert p1 == -1
        self.cells[seq] = self.cells[seq][: max(p0, 0)]

    def seq_copy_prefix(self, src: int, dst: int, length: int) -> None:
        self.cells[dst] = self.cells[src][:length]
        self.copies += 1


def prompt(i: int) -> list[int]:
    # A shared system prompt, then 30 tokens of its own.
    return [1, 2, 3, 4, 5, 6] + [100 * (i + 1) + k for k in range(30)]


def reply(i: int) -> list[int]:
    return [50_000 + 100 * i + k for k in range(40)]


def new_seq(tokens: list[int]) -> Sequence:
    request = GenerationRequest("r", tokens, SamplingParams(temperature=0))
    return Sequence(request=request, index=0, tokens=list(tokens), prompt_len=len(tokens))


def run(slots: SlotManager, kv: FakeKV, seq: Sequence, answer: list[int]) -> None:
    """What the engine does with a sequence it admitted: compute the rest, generate, leave."""
    assert seq.slot is not None
    assert kv.cells[seq.slot] == seq.tokens[: seq.num_computed], "cached cells are wrong"
    seq.tokens.extend(answer)
    kv.cells[seq.slot] = list(seq.tokens)
    seq.num_computed = len(seq.tokens)


@pytest.fixture
def kv() -> FakeKV:
    return FakeKV()


def fill_like_a_closed_loop(slots: SlotManager, kv: FakeKV, prompts: list[int]) -> None:
    """All slots busy with ``prompts`` at once (the last burst), then all released."""
    seqs = [new_seq(prompt(i)) for i in prompts]
    for seq, i in zip(seqs, prompts, strict=True):
        slots.acquire(seq)
        run(slots, kv, seq, reply(i))
    for seq in seqs:
        slots.release(seq)


def hold(slots: SlotManager, kv: FakeKV, seq_id: int, tokens: list[int],
         owner: Sequence | None = None) -> None:
    """Make slot ``seq_id`` hold ``tokens``: cached while free, or computed by ``owner``."""
    slot = slots._slots[seq_id]  # noqa: SLF001 - set the stage exactly
    kv.cells[seq_id] = list(tokens)
    if owner is None:
        slot.cached = list(tokens)
        return
    slot.owner, owner.slot, owner.num_computed = owner, seq_id, len(tokens)


def test_a_slot_taken_for_contiguity_has_its_cache_moved_aside(kv: FakeKV) -> None:
    slots = SlotManager(kv, N_SLOTS, prefix_caching=True)  # type: ignore[arg-type]
    running = new_seq(prompt(0))
    hold(slots, kv, 6, prompt(0) + reply(0), owner=running)
    hold(slots, kv, 5, prompt(1) + reply(1))  # the only copies of prompts 1 and 2,
    hold(slots, kv, 7, prompt(2) + reply(2))  # on both sides of the running sequence
    for seq_id in (0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15):  # copies of one another
        hold(slots, kv, seq_id, prompt(3) + reply(3))
    owned = [6]
    for i in (3, 1, 2):
        seq = new_seq(prompt(i))
        assert slots.acquire(seq) == len(prompt(i)) - 1, f"prompt {i} was lost"
        run(slots, kv, seq, reply(i))
        owned.append(seq.slot)  # type: ignore[arg-type]
        assert max(owned) - min(owned) == len(owned) - 1, f"running ids scattered: {owned}"
    assert slots.rescues == 1


def test_a_burst_arriving_one_by_one_finds_every_prompt(
    kv: FakeKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The next burst of a closed loop at full concurrency (12 prompts in turn, 16 slots),
    # arriving one by one, placed for contiguity (as if the house had not been full of late):
    # arrivals take the slots whose caches are held twice.
    monkeypatch.setattr(kv_slots, "FULL_HOUSE_MEMORY", 0.0)
    slots = SlotManager(kv, N_SLOTS, prefix_caching=True)  # type: ignore[arg-type]
    fill_like_a_closed_loop(slots, kv, [i % 12 for i in range(16, 32)])
    owned = []
    for i in [i % 12 for i in range(32, 48)]:
        seq = new_seq(prompt(i))
        cached = slots.acquire(seq)
        assert cached == len(prompt(i)) - 1, f"prompt {i} was lost"
        run(slots, kv, seq, reply(i))
        owned.append(seq.slot)  # type: ignore[arg-type]
        assert max(owned) - min(owned) == len(owned) - 1, f"running ids scattered: {owned}"


def test_conversations_keep_their_history_when_every_slot_holds_an_older_cache(
    kv: FakeKV,
) -> None:
    # A server that has run for a while: every slot holds some earlier conversation's cache,
    # each held nowhere else. Then 8 conversations of 3 turns, 4 at a time (fewer than the
    # slots). Arrivals are placed next to the running ids; what they overwrite must be the
    # oldest caches, not the history of a conversation that has just answered.
    slots = SlotManager(kv, N_SLOTS, prefix_caching=True)  # type: ignore[arg-type]
    for seq_id in range(N_SLOTS):
        hold(slots, kv, seq_id, prompt(100 + seq_id) + reply(100 + seq_id))
    history = {i: prompt(i) for i in range(8)}
    computed = {i: 0 for i in range(8)}  # what its last turn left in the KV cache
    for turn in range(3):
        for wave in (range(4), range(4, 8)):
            seqs = []
            for i in wave:
                seq = new_seq(history[i])
                cached = slots.acquire(seq)
                if turn:
                    assert cached == computed[i], (
                        f"conversation {i} lost its history before turn {turn}")
                run(slots, kv, seq, reply(i)[turn * 10: turn * 10 + 10])
                seqs.append((i, seq))
            for i, seq in seqs:
                computed[i] = seq.num_computed
                history[i] = list(seq.tokens) + [7, 8, 9]  # the next user message
                slots.release(seq)


def test_a_newer_cache_taken_for_contiguity_goes_to_the_oldest_slot(kv: FakeKV) -> None:
    # Slot 5 holds the history of a conversation that just answered, between two running
    # sequences; every other slot holds an older cache of its own. An arrival takes slot 5
    # (contiguity), so the history moves to the least recently used slot, not away.
    slots = SlotManager(kv, N_SLOTS, prefix_caching=True)  # type: ignore[arg-type]
    for seq_id in range(N_SLOTS):
        hold(slots, kv, seq_id, prompt(100 + seq_id) + reply(100 + seq_id))
        slots._slots[seq_id].last_used = 10.0 + seq_id  # noqa: SLF001
    hold(slots, kv, 4, prompt(40), owner=new_seq(prompt(40)))
    hold(slots, kv, 6, prompt(60), owner=new_seq(prompt(60)))
    recent = prompt(0) + reply(0)
    hold(slots, kv, 5, recent)
    slots._slots[5].last_used = 1e12  # noqa: SLF001 - newer than any
    arrival = new_seq(prompt(1))
    slots.acquire(arrival)
    assert arrival.slot == 5 and slots.rescues == 1
    moved_to = [seq_id for seq_id, cells in kv.cells.items() if cells == recent]
    assert moved_to in ([0], [1])  # the oldest (slot 0, unless it was the copy's source)
    again = new_seq(recent + [7, 8, 9])
    assert slots.acquire(again) == len(recent)
