"""KV-cache sequence ids ("slots") and the prefix cache that lives in them.

A slot keeps the KV cells of the last sequence that used it after that sequence finishes.
A new prompt that continues a free slot's tokens takes that slot; one that shares only a
prefix with some slot (free or running) gets that prefix copied into the emptiest, least
recently used free slot, so other conversations' caches survive; either way it computes
just the rest. Cached cells of free slots are dropped, least recently used first, when a
unified cache runs short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from insieme.engine.llama_runtime import LlamaRuntime
from insieme.engine.sequence import Sequence

# Copying a prefix into another sequence id: with a KV stream per sequence llama.cpp copies
# the whole stream's buffer, measured here at ~3.5 ms per 1024 cells (a prompt token costs
# ~3.7 ms to prefill on 2 cores); in a unified pool it only relabels cells.
COPY_CELLS_PER_TOKEN = 1024


@dataclass(eq=False)
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens in KV while free
    owner: Sequence | None = None
    last_used: float = 0.0

    def tokens(self) -> list[int]:
        """The tokens this slot's KV cells hold now."""
        if self.owner is not None:
            return self.owner.tokens[: self.owner.num_computed]
        return self.cached


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotManager:
    """Hands out KV sequence ids and reuses what they hold."""

    def __init__(self, runtime: LlamaRuntime, n_slots: int, prefix_caching: bool) -> None:
        self._runtime = runtime
        self._slots = [Slot(seq_id=i) for i in range(n_slots)]
        self._prefix_caching = prefix_caching
        self.queries = 0
        self.hits = 0

    @property
    def free(self) -> int:
        return sum(1 for s in self._slots if s.owner is None)

    def acquire(self, seq: Sequence, *, reuse: bool = True) -> int:
        """Give ``seq`` a slot; returns how many of its tokens are already in the KV cache.

        A prompt that continues what a free slot holds (the next turn of a conversation)
        takes that slot. A prompt that shares only part of a slot's tokens (the same system
        prompt, another question) gets the shared prefix copied into the emptiest, least
        recently used free slot instead, so the cached conversation survives for its own
        next turn; taking the slot itself would overwrite it.
        """
        free = [s for s in self._slots if s.owner is None]
        assert free, "acquire() needs a free slot"
        want = seq.tokens
        target = self._victim(free, spare=None)
        assert target is not None
        source, length = None, 0
        if reuse and self._prefix_caching:
            self.queries += 1
            source, length = self._longest_prefix(want)
        # Keep at least one token to compute, so there are logits to sample from.
        length = max(0, min(length, len(want) - 1))
        if source is not None and source.owner is None:
            spare = self._victim(free, spare=source)
            if length >= len(source.cached) - 1 or spare is None:
                # Nothing of the slot would be lost, or no other slot is free: take it.
                target, source = source, None
            else:
                target = spare
        if source is not None and length < self._copy_min:
            source, length = None, 0  # too short to pay for a copy: compute it
        runtime = self._runtime
        if source is not None:
            runtime.seq_copy_prefix(source.seq_id, target.seq_id, length)
        else:
            runtime.seq_rm(target.seq_id, length, -1)
        if length:
            self.hits += 1
        target.cached = []
        target.owner = seq
        target.last_used = time.monotonic()
        seq.slot = target.seq_id
        seq.num_computed = length
        return length

    @property
    def _copy_min(self) -> int:
        """Fewest reused tokens that pay for a copy between sequence ids."""
        if self._runtime.shape.kv_unified:
            return 1
        return 1 + self._runtime.n_ctx_seq // COPY_CELLS_PER_TOKEN

    def _longest_prefix(self, want: list[int]) -> tuple[Slot | None, int]:
        """The slot (free or running) holding the longest prefix of ``want``; free ones win
        ties, as they need no copy."""
        best, best_len = None, 0
        for slot in self._slots:
            held = slot.tokens()
            if not held or held[0] != want[0]:
                continue
            length = common_prefix(held, want)
            if length > best_len or (length == best_len and best is not None
                                     and best.owner is not None and slot.owner is None):
                best, best_len = slot, length
        return best, best_len

    @staticmethod
    def _victim(free: list[Slot], *, spare: Slot | None) -> Slot | None:
        """The free slot whose cache is worth least: an empty one, else the least recently
        used; never ``spare``."""
        candidates = [s for s in free if s is not spare]
        if not candidates:
            return None
        return min(candidates, key=lambda s: (len(s.cached) > 0, s.last_used))

    def share_prefix(self, leader: Sequence, follower: Sequence) -> None:
        """After ``leader`` prefilled a prompt, ``follower`` (same prompt, n > 1) gets
        the same KV cells instead of computing them again."""
        assert follower.slot is not None and leader.slot is not None
        self._runtime.seq_copy_prefix(leader.slot, follower.slot, leader.num_computed)
        follower.num_computed = leader.num_computed

    def release(self, seq: Sequence, *, keep: bool = True) -> None:
        """Free ``seq``'s slot, keeping its cells as a cached prefix unless told not to."""
        if seq.slot is None:
            return
        slot = self._slots[seq.slot]
        if keep and self._prefix_caching and seq.num_computed > 0:
            slot.cached = seq.tokens[: seq.num_computed]
        else:
            slot.cached = []
            self._runtime.seq_rm(slot.seq_id, 0, -1)
        slot.owner = None
        slot.last_used = time.monotonic()
        seq.slot = None

    def drop_one_cached(self) -> bool:
        """Free the cells of the least recently used cached prefix; False if there is none."""
        cached = [s for s in self._slots if s.owner is None and s.cached]
        if not cached:
            return False
        victim = min(cached, key=lambda s: s.last_used)
        self._runtime.seq_rm(victim.seq_id, 0, -1)
        victim.cached = []
        return True

    def cells_in_use(self) -> int:
        """KV cells held by running sequences and cached prefixes (shared cells counted once
        per distinct slot, so this is an upper bound)."""
        return sum(len(s.tokens()) for s in self._slots)
