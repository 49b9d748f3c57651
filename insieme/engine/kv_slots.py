"""KV-cache sequence ids ("slots") and the prefix cache that lives in them.

A slot keeps the KV cells of the last sequence that used it after that sequence finishes.
A new sequence goes where it keeps the running ids contiguous (llama.cpp computes each run
of consecutive ids separately when every sequence has its own KV stream). Its prompt's
longest cached prefix, in any slot, free or running, is reused: in place when it is that
slot and the prompt continues all of it, else copied, so other conversations' caches
survive. Cached cells of free slots are dropped, least recently used first, when a unified
cache runs short.
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

        Where a sequence sits matters every step: with a KV stream per sequence, llama.cpp
        splits a batch into one compute per run of consecutive sequence ids, so running
        sequences must stay on adjacent ids. The slot is chosen for that first (see
        ``_place``); the longest cached prefix of the prompt, in whatever slot it lives, is
        then taken over when it is in that very slot, or copied from its slot otherwise,
        which leaves the source's cached conversation intact for its own next turn.
        """
        free = [s for s in self._slots if s.owner is None]
        assert free, "acquire() needs a free slot"
        want = seq.tokens
        source, length = None, 0
        if reuse and self._prefix_caching:
            self.queries += 1
            source, length = self._longest_prefix(want)
        # Keep at least one token to compute, so there are logits to sample from.
        length = max(0, min(length, len(want) - 1))
        # Taking the source's own slot overwrites what it holds past the shared prefix:
        # worth it only when the prompt continues all of it (the next turn).
        keeps_all = source is not None and length >= len(source.tokens()) - 1
        target = self._place(free, prefer=source if keeps_all else None)
        runtime = self._runtime
        if source is target:  # the prefix is already in place
            runtime.seq_rm(target.seq_id, length, -1)
        elif source is not None and length >= self._copy_min:
            runtime.seq_copy_prefix(source.seq_id, target.seq_id, length)
        else:  # nothing cached, or too short to pay for a copy: compute it all
            length = 0
            runtime.seq_rm(target.seq_id, 0, -1)
        if length:
            self.hits += 1
        target.cached = []
        target.owner = seq
        target.last_used = time.monotonic()
        seq.slot = target.seq_id
        seq.num_computed = length
        return length

    def _place(self, free: list[Slot], *, prefer: Slot | None) -> Slot:
        """The free slot to use: fewest runs of consecutive running ids once it is taken;
        then ``prefer`` (it holds the prompt's prefix: no copy); then an empty slot; then
        the least recently used cached one."""
        owned = {s.seq_id for s in self._slots if s.owner is not None}

        def runs_with(seq_id: int) -> int:
            if self._runtime.shape.kv_unified:
                return 0  # one stream: llama.cpp batches any ids together
            ids = owned | {seq_id}
            return sum(1 for i in ids if i - 1 not in ids)

        return min(free, key=lambda s: (runs_with(s.seq_id), s is not prefer,
                                        len(s.cached) > 0, s.last_used))

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
