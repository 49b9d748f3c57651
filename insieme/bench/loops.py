"""How one level loads the server: a closed loop, or open-loop arrivals.

- Closed loop (``--concurrency N``): N clients, each sending its next request as soon as its
  last one finished, until the level's requests are spent. The server sets the pace.
- Open loop (``--request-rate R``): requests are due at Poisson arrival times drawn from the
  start of the level (``schedule.arrival_times``) and sent when due, whether or not the
  earlier ones have finished, so a server slower than R builds a queue, and its TTFT shows
  it. ``--max-concurrency`` caps the requests in flight: a due request then waits on the
  client for a free slot, and that wait is not part of its latencies (as in
  ``vllm bench serve``).

In both, a multi-turn conversation's turn is sent once its previous turn is answered (with
that answer in its history); a turn whose predecessor failed is not sent, and counts as a
``previous_turn_failed`` error.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Protocol

import httpx

from insieme.bench.client import stream_chat
from insieme.bench.datasets import Conversation, request_order
from insieme.bench.metrics import LevelMetrics, RequestRecord
from insieme.bench.prompts import Messages, Prompt
from insieme.bench.schedule import arrival_times
from insieme.bench.settings import BenchSettings, Level


class ProgressSink(Protocol):
    """Told as the benchmark goes; the CLI's rich progress bar is one."""

    def level_started(self, level: Level, requests: int) -> None: ...

    def request_done(self, record: RequestRecord) -> None: ...

    def level_done(self, metrics: LevelMetrics) -> None: ...


class ConversationState:
    """One conversation while its level runs: the history so far, and which turns are done."""

    def __init__(self, conversation: Conversation) -> None:
        self.turns = conversation
        self.history: list[dict[str, str]] = []
        self.answered = [asyncio.Event() for _ in conversation]
        self.failed = False

    async def messages(self, turn: int) -> Messages | None:
        """The turn's whole chat, once the turn before it is answered; None if it failed."""
        if turn:
            await self.answered[turn - 1].wait()
        if self.failed:
            return None
        return (*self.history, *self.turns[turn].messages)

    def finish(self, turn: int, record: RequestRecord) -> None:
        if record.ok:
            self.history += [*self.turns[turn].messages,
                             {"role": "assistant", "content": record.text}]
        else:
            self.failed = True
        self.answered[turn].set()


class LevelRun:
    """The requests of one level, sent in ``request_order``; collects their records."""

    def __init__(self, client: httpx.AsyncClient, settings: BenchSettings,
                 workload: tuple[Conversation, ...], progress: ProgressSink | None) -> None:
        self.client = client
        self.settings = settings
        self.progress = progress
        self.conversations = [ConversationState(conversation) for conversation in workload]
        self.order = request_order(workload, seed=settings.seed)
        self.records: list[RequestRecord] = []
        self.started = time.perf_counter()

    async def send(self, position: int, slots: asyncio.Semaphore | None = None) -> None:
        index, turn = self.order[position]
        conversation = self.conversations[index]
        # The conversation first, the slot after: a turn holding a slot while it waits for
        # its predecessor could starve that predecessor of one.
        messages = await conversation.messages(turn)
        if messages is None:
            record = RequestRecord(error="previous_turn_failed",
                                   error_message="an earlier turn of its conversation failed, "
                                   "so it was not sent")
        elif slots is None:
            record = await self._stream(messages, conversation.turns[turn])
        else:
            async with slots:
                record = await self._stream(messages, conversation.turns[turn])
        conversation.finish(turn, record)
        self.records.append(record)
        if self.progress is not None:
            self.progress.request_done(record)

    async def _stream(self, messages: Messages, prompt: Prompt) -> RequestRecord:
        body = self.settings.body(messages, prompt.max_tokens, prompt.ignore_eos)
        sent_at = time.perf_counter() - self.started
        record = await stream_chat(self.client, self.settings.chat_url, body,
                                   self.settings.headers())
        record.sent_at = sent_at
        return record


async def run_level(
    client: httpx.AsyncClient,
    settings: BenchSettings,
    level: Level,
    workload: tuple[Conversation, ...],
    progress: ProgressSink | None = None,
) -> tuple[list[RequestRecord], float]:
    """Send the workload at this level; its records and its wall time in seconds."""
    # A full garbage collection scans every object alive; with matplotlib and httpx loaded it
    # stalls the event loop for 100 ms or more, and open-loop requests due meanwhile go out
    # late, in a bunch. Frozen, the heap made before the level is not scanned while it runs
    # (and any garbage in it waits for the level's end to be collected).
    gc.freeze()
    try:
        run = LevelRun(client, settings, workload, progress)
        async with asyncio.TaskGroup() as group:
            if level.request_rate is None:
                _closed_loop(run, group, level.concurrency or 1)
            else:
                await _open_loop(run, group, level, settings.seed)
        return run.records, time.perf_counter() - run.started
    finally:
        gc.unfreeze()


def _closed_loop(run: LevelRun, group: asyncio.TaskGroup, clients: int) -> None:
    # Single-threaded asyncio: one shared iterator hands out the requests without a lock.
    positions = iter(range(len(run.order)))

    async def client_loop() -> None:
        for position in positions:
            await run.send(position)

    for _ in range(clients):
        group.create_task(client_loop())


async def _open_loop(run: LevelRun, group: asyncio.TaskGroup, level: Level, seed: int) -> None:
    assert level.request_rate is not None
    slots = asyncio.Semaphore(level.concurrency) if level.concurrency is not None else None
    for position, due in enumerate(arrival_times(len(run.order), level.request_rate, seed)):
        # Due times count from the level's start, never from the last request's send or
        # finish: a late wake-up is caught up at once instead of shifting every later one.
        delay = run.started + due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        group.create_task(run.send(position, slots))
