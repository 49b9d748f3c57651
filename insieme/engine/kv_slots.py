"""KV-cache sequence ids ("slots") and the prefix cache that lives in them.

A slot keeps the KV cells of the last sequence that used it after that sequence finishes.
A new prompt takes the free slot holding the longest common prefix with it, or copies a
clearly longer prefix from any other slot, and computes just the rest. Cached cells of free
slots are dropped, least recently used first, when a unified cache runs short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from insieme.engine.llama_runtime import LlamaRuntime
from insieme.engine.sequence import Sequence

# Tokens a copied prefix must save over the best free slot's own (a whole-stream copy costs
# about as much as prefilling a dozen tokens on a laptop CPU).
COPY_MIN_GAIN = 16


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
        """Give ``seq`` a slot; returns how many of its tokens are already in the KV cache."""
        free = [s for s in self._slots if s.owner is None]
        assert free, "acquire() needs a free slot"
        want = seq.tokens
        # By default the emptiest, least recently used free slot.
        best = min(free, key=lambda s: (len(s.cached) > 0, s.last_used))
        best_len, source = 0, None
        if reuse and self._prefix_caching:
            self.queries += 1
            free_len = owned_len = 0
            free_slot = owned_slot = None
            for slot in self._slots:
                held = slot.tokens()
                if not held or held[0] != want[0]:
                    continue
                length = common_prefix(held, want)
                if slot.owner is None and length > free_len:
                    free_slot, free_len = slot, length
                elif slot.owner is not None and length > owned_len:
                    owned_slot, owned_len = slot, length
            if free_slot is not None:
                best, best_len = free_slot, free_len
            # A copy (a whole stream's buffer with split streams) pays only for a clearly
            # longer prefix than the free slot already holds.
            if owned_slot is not None and owned_len > best_len + COPY_MIN_GAIN:
                source, best_len = owned_slot, owned_len
                best = min(free, key=lambda s: (len(s.cached) > 0, s.last_used))
        # Keep at least one token to compute, so there are logits to sample from.
        reused = max(0, min(best_len, len(want) - 1))
        runtime = self._runtime
        if source is not None:
            runtime.seq_copy_prefix(source.seq_id, best.seq_id, reused)
        else:
            runtime.seq_rm(best.seq_id, reused, -1)
        if reused:
            self.hits += 1
        best.cached = []
        best.owner = seq
        best.last_used = time.monotonic()
        seq.slot = best.seq_id
        seq.num_computed = reused
        return reused

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
