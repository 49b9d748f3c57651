"""KV-cache sequence ids ("slots") and the prefix cache that lives in them.

A slot keeps the KV cells of the last sequence that used it after that sequence finishes.
A new sequence goes where it keeps the running ids contiguous (llama.cpp computes each run
of consecutive ids separately when every sequence has its own KV stream), except when the
arrivals fill every slot, or did within the last slots' worth of admissions: then contiguity
takes care of itself and an arrival takes over the slot holding its prompt. Its prompt's
longest cached prefix, in any slot, free or running, is reused: in place when it is that
slot, else copied, so other conversations' caches survive.
The slot given up is one whose loss costs no cached tokens (what it holds, another slot holds
too), else the least recently used; when contiguity takes a slot whose cache is newer, that
cache is first moved to the slot given up. Cached cells of free slots are dropped, least
recently used first, when a unified cache runs short.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from insieme.engine.llama.runtime import LlamaRuntime
from insieme.engine.llama.sequence import Sequence

# Copying a prefix into another sequence id: with a KV stream per sequence llama.cpp copies
# the whole stream's buffer, measured here at ~3.5 ms per 1024 cells (a prompt token costs
# ~3.7 ms to prefill on 2 cores); in a unified pool it only relabels cells.
COPY_CELLS_PER_TOKEN = 1024

# For how many admissions (in slots' worth) after every slot was in use arrivals are placed
# as into a full house: a closed loop at full concurrency frees its slots and refills them
# within a step or two, and again after any pause. Counted in admissions, not seconds, so
# that an idle spell between two rounds of such load does not forget it.
FULL_HOUSE_MEMORY = 1.0

# A free slot's cache worth moving aside rather than overwriting (beyond the copy's cost).
RESCUE_MIN_TOKENS = 8


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
    """Length of the longest common prefix (list slices compare in C: bisect on them)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    return low


class SlotManager:
    """Hands out KV sequence ids and reuses what they hold."""

    def __init__(self, runtime: LlamaRuntime, n_slots: int, prefix_caching: bool) -> None:
        self._runtime = runtime
        self._slots = [Slot(seq_id=i) for i in range(n_slots)]
        self._prefix_caching = prefix_caching
        self.queries = 0
        self.hits = 0
        self.rescues = 0  # cached prefixes moved aside instead of overwritten
        # Whether every slot was in use, at each of the last admissions.
        self._was_full: deque[bool] = deque(maxlen=max(1, round(n_slots * FULL_HOUSE_MEMORY)))

    @property
    def free(self) -> int:
        return sum(1 for s in self._slots if s.owner is None)

    def acquire(self, seq: Sequence, *, reuse: bool = True, arriving: int = 1) -> int:
        """Give ``seq`` a slot; returns how many of its tokens are already in the KV cache.

        ``arriving`` counts the sequences being admitted together with this one (itself
        included). Where a sequence sits matters every step: with a KV stream per sequence,
        llama.cpp splits a batch into one compute per run of consecutive sequence ids, so
        running sequences must stay on adjacent ids (see ``_place``). The longest cached
        prefix of the prompt, in whatever slot it lives, is taken over when it is in the slot
        chosen, or copied from its slot otherwise.
        """
        free = [s for s in self._slots if s.owner is None]
        assert free, "acquire() needs a free slot"
        now = time.monotonic()
        want = seq.tokens
        source, length = None, 0
        if reuse and self._prefix_caching:
            self.queries += 1
            source, length = self._longest_prefix(want)
        # Keep at least one token to compute, so there are logits to sample from.
        length = max(0, min(length, len(want) - 1))
        # Once every slot is taken the running ids are contiguous whatever goes where: an
        # arrival then takes over the free slot that holds its prompt. Otherwise taking the
        # source's slot overwrites what it holds past the shared prefix, worth it only when
        # the prompt continues all of it (the next turn of a conversation).
        full_house = len(free) <= arriving or (FULL_HOUSE_MEMORY > 0 and any(self._was_full))
        prefer = None
        if source is not None and source.owner is None and (
                full_house or length >= len(source.tokens()) - 1):
            prefer = source
        target = self._place(free, prefer=prefer, full_house=full_house)
        if target is not source:
            self._rescue(target, free, source)
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
        target.last_used = now
        seq.slot = target.seq_id
        seq.num_computed = length
        self._was_full.append(len(free) == 1)
        return length

    def _place(self, free: list[Slot], *, prefer: Slot | None, full_house: bool) -> Slot:
        """The free slot to use: ``prefer`` (it holds the prompt's prefix: no copy) when the
        house is full, else the fewest runs of consecutive running ids once it is taken and
        then ``prefer``; among the rest, see ``_eviction_rank``."""
        owned = {s.seq_id for s in self._slots if s.owner is not None}
        unified = self._runtime.shape.kv_unified

        def runs_with(slot: Slot) -> int:
            if unified:
                return 0  # one stream: llama.cpp batches any ids together
            ids = owned | {slot.seq_id}
            return sum(1 for i in ids if i - 1 not in ids)

        def rank(slot: Slot) -> tuple[int, int]:
            runs, preferred = runs_with(slot), int(slot is not prefer)
            return (preferred, runs) if full_house else (runs, preferred)

        ranks = {s.seq_id: rank(s) for s in free}
        best = min(ranks.values())
        tied = [s for s in free if ranks[s.seq_id] == best]
        if len(tied) == 1:
            return tied[0]
        return min(tied, key=self._eviction_rank)

    def _eviction_rank(self, slot: Slot) -> tuple[bool, float]:
        """Which free slot's cache to give up first: one that costs nothing (empty, or held
        by another slot too), then the least recently used. Recency, not size: a long cache
        from an hour ago is worth less than the conversation that answered a moment ago and
        is about to send its next turn (ranking by tokens lost evicted exactly those, once
        every slot held something)."""
        return self._lost_if_taken(slot) > 0, slot.last_used

    def _rescue(self, target: Slot, free: list[Slot], source: Slot | None) -> None:
        """Before ``target`` is overwritten, move what only it holds to a free slot whose
        loss costs nothing (empty, or held elsewhere too), when contiguity forced the choice:
        a stream copy costs less than recomputing a prompt (see ``COPY_CELLS_PER_TOKEN``)."""
        if self._runtime.shape.kv_unified:
            return  # placement there is free to pick the cheapest slot already
        if self._lost_if_taken(target) < 2 * self._copy_min + RESCUE_MIN_TOKENS:
            return
        spare = [s for s in free if s is not target and s is not source
                 and self._lost_if_taken(s) == 0]
        if not spare:
            # Every other free slot holds a cache of its own: give up the least recently
            # used of them instead, when it is older than what ``target`` holds.
            others = [s for s in free if s is not target and s is not source]
            oldest = min(others, key=lambda s: s.last_used, default=None)
            if oldest is None or oldest.last_used >= target.last_used:
                return
            spare = [oldest]
        owned = {s.seq_id for s in self._slots if s.owner is not None} | {target.seq_id}
        # Away from the running ids, where the next arrival would not need it.
        dest = min(spare, key=lambda s: ((s.seq_id - 1 in owned) or (s.seq_id + 1 in owned),
                                         s.last_used))
        self._runtime.seq_copy_prefix(target.seq_id, dest.seq_id, len(target.cached))
        dest.cached, dest.last_used = target.cached, target.last_used
        target.cached = []
        self.rescues += 1

    def _lost_if_taken(self, slot: Slot) -> int:
        """Cached tokens of a free slot that no other slot also holds."""
        held = slot.cached
        if not held:
            return 0
        kept = max((common_prefix(held, other.tokens()) for other in self._slots
                    if other is not slot), default=0)
        return len(held) - kept

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
