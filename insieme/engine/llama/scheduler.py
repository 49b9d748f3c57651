"""Continuous-batching policy: which sequences feed which tokens into the next decode.

Each step every decoding sequence adds its one new token; the rest of the token budget goes
to prompt chunks (chunked prefill) of sequences still prefilling, oldest first, then to newly
admitted requests. Every waiting request that fits the free KV slots is admitted at once, even
past the budget (its prefill then waits for a later step), so that placement sees a whole
burst of arrivals together. A request that finds the queue full is refused before it gets
here (see ``LlamaEngine.submit``).

While any sequence decodes, a prompt with more than ``long_prefill_threshold`` tokens still
to feed gets at most ``long_prefill_chunk`` a step (by default the threshold itself, as
vLLM's ``--long-prefill-token-threshold`` does): one long prompt then costs the running
streams a little each step instead of stalling them for whole seconds of prefill.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from insieme.engine.llama.kv_slots import SlotManager
from insieme.engine.llama.sequence import SeqStatus, Sequence

# Cells kept free per running sequence when admitting into a shared KV pool.
GROWTH_RESERVE = 32


@dataclass(frozen=True, slots=True)
class Work:
    """``count`` tokens of ``seq`` from position ``start``; sample after them if ``sample``."""

    seq: Sequence
    start: int
    count: int

    @property
    def sample(self) -> bool:
        return self.start + self.count == len(self.seq.tokens)


class Scheduler:
    """Short policy over explicit state; the KV bookkeeping lives in ``SlotManager``."""

    def __init__(
        self,
        slots: SlotManager,
        max_num_seqs: int,
        token_budget: int,
        kv_pool: int | None = None,
        long_prefill_threshold: int = 0,  # 0: prompts take what the budget leaves
        long_prefill_chunk: int = 0,  # 0: the threshold
    ) -> None:
        self.slots = slots
        self.max_num_seqs = max_num_seqs
        self.token_budget = token_budget
        self.long_prefill_threshold = long_prefill_threshold
        self.long_prefill_chunk = long_prefill_chunk or long_prefill_threshold
        # A shared KV pool (None: a stream per sequence, which never runs short).
        self.kv_pool = kv_pool
        self.waiting: deque[Sequence] = deque()  # group leaders; followers ride along
        self.running: list[Sequence] = []

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running) + sum(len(s.followers) for s in self.running)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def add(self, leader: Sequence) -> None:
        self.waiting.append(leader)

    def schedule(self) -> list[Work]:
        budget = self.token_budget
        work: list[Work] = []
        prefilling: list[Sequence] = []
        for seq in self.running:
            if seq.num_pending == 1:
                work.append(Work(seq, seq.num_computed, 1))
                budget -= 1
            else:
                prefilling.append(seq)
        decoding = bool(work)
        for seq in prefilling:
            if budget <= 0:
                break
            count = self._chunk(seq, budget, decoding)
            work.append(Work(seq, seq.num_computed, count))
            budget -= count
        # Everyone who fits is admitted now, even past the token budget (their prefill then
        # starts in a later step): taking their slots together lets the placement see the
        # whole burst, so one arrival does not overwrite the cached prompt of another.
        arriving = self._fits() if self.waiting else 0
        while self.waiting:
            leader = self.waiting[0]
            needed = 1 + len(leader.followers)
            if self.slots.free < needed or self.num_running + needed > self.max_num_seqs:
                break
            if not self._pool_has_room(leader, needed):
                break
            self.waiting.popleft()
            self._admit(leader, arriving)
            arriving -= needed
            if budget > 0:
                count = self._chunk(leader, budget, decoding)
                work.append(Work(leader, leader.num_computed, count))
                budget -= count
        return work

    def _chunk(self, seq: Sequence, budget: int, decoding: bool) -> int:
        """Prompt tokens ``seq`` feeds this step."""
        count = min(seq.num_pending, budget)
        limit = self.long_prefill_threshold
        if decoding and 0 < limit < seq.num_pending:
            count = min(count, self.long_prefill_chunk)
        return count

    def _fits(self) -> int:
        """How many waiting sequences (followers included) the free slots can take now."""
        room = min(self.slots.free, self.max_num_seqs - self.num_running)
        total = 0
        for leader in self.waiting:
            needed = 1 + len(leader.followers)
            if total + needed > room:
                break
            total += needed
        return total

    def _pool_has_room(self, leader: Sequence, needed: int) -> bool:
        """Admit into a shared pool only what fits beside the running sequences with some
        room to grow; otherwise a preempted sequence would be re-admitted at once and preempt
        again. Shared prefix cells are counted per sequence, which errs on the safe side."""
        if self.kv_pool is None or not self.running:
            return True
        held = sum(len(s.tokens) + len(s.followers) * len(s.tokens) for s in self.running)
        growth = GROWTH_RESERVE * (self.num_running + needed)
        return held + needed * len(leader.tokens) + growth <= self.kv_pool

    def _admit(self, leader: Sequence, arriving: int = 1) -> None:
        if leader.admitted_at is None:  # a preempted sequence keeps its first admission
            leader.admitted_at = time.monotonic()
        leader.cached_tokens = self.slots.acquire(leader, arriving=max(arriving, 1))
        leader.status = SeqStatus.RUNNING
        for follower in leader.followers:
            self.slots.acquire(follower, reuse=False)
            follower.status = SeqStatus.PARKED
        self.running.append(leader)

    def unpark(self, leader: Sequence) -> list[Sequence]:
        """After a leader's shared prefill: its followers run on their own from now on."""
        followers, leader.followers = leader.followers, []
        for follower in followers:
            self.slots.share_prefix(leader, follower)
            follower.cached_tokens = leader.cached_tokens
            follower.status = SeqStatus.RUNNING
            self.running.append(follower)
        return followers

    def finish(self, seq: Sequence) -> None:
        """Take a sequence out of the batch and free its slot (followers included)."""
        for follower in seq.followers:
            self.finish(follower)
        seq.followers = []
        if seq in self.running:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        self.slots.release(seq, keep=seq.status is not SeqStatus.PARKED)
        seq.status = SeqStatus.FINISHED

    def preempt_newest(self) -> Sequence | None:
        """Free the KV cells of the newest running sequence; it will be recomputed later."""
        if len(self.running) <= 1:
            return None  # the cache always holds one sequence of max_model_len
        victim = max(self.running, key=lambda s: s.arrival)
        self.running.remove(victim)
        for follower in victim.followers:
            self.slots.release(follower, keep=False)
            follower.status = SeqStatus.WAITING
        self.slots.release(victim, keep=False)
        victim.num_computed = 0
        victim.status = SeqStatus.WAITING
        self.waiting.appendleft(victim)
        return victim

    def sequences_of(self, request_id: str) -> list[Sequence]:
        found = []
        for seq in [*self.running, *self.waiting]:
            if seq.request_id == request_id:
                found.append(seq)
                found.extend(seq.followers)
        return found
