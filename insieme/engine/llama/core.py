"""The engine loop, on its own thread: schedule → run → postprocess, one decode per step.

``llama_decode`` releases the GIL, so the asyncio event loop keeps serving HTTP while a
step computes. Per-step Python work is O(sequences): fill the batch, sample each sequence
with its C sampler chain, turn its new token into text, hand the outputs to the event loop
in one call. With speculation on, a sequence may also feed a draft of guessed tokens, whose
rows it samples in order as far as they hold (``speculation``): several tokens in one step.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from insieme.engine.llama.kv_slots import SlotManager
from insieme.engine.llama.logprobs import LogprobReader
from insieme.engine.llama.runtime import Batch, LlamaRuntime
from insieme.engine.llama.sampler import GrammarPrototype, Sampler
from insieme.engine.llama.scheduler import Scheduler, Work
from insieme.engine.llama.sequence import SeqStatus, Sequence, sequences_for
from insieme.engine.llama.speculation import SpeculationConfig, Speculator
from insieme.engine.types import (
    FinishReason,
    GenerationRequest,
    StepOutput,
    TokenInfo,
    TopLogprob,
)

log = logging.getLogger("insieme.engine")

Emit = Callable[[list[tuple[str, StepOutput]]], None]


@dataclass(frozen=True, slots=True)
class _Add:
    request: GenerationRequest
    grammar: str | None  # GBNF text (with a ``root`` rule) the request's output must follow


@dataclass(frozen=True, slots=True)
class _Abort:
    request_id: str


class _Stop:
    pass


class FatalFault(BaseException):
    """Test hook (``X-Insieme-Fault: engine:N``): escapes every per-request guard, so the
    engine thread dies the way an unexpected failure would kill it."""


class EngineCore:
    """Owns the scheduler and the runtime; only its thread touches them after start."""

    def __init__(
        self,
        runtime: LlamaRuntime,
        *,
        max_num_seqs: int,
        token_budget: int,
        max_model_len: int,
        long_prefill_threshold: int = 0,
        long_prefill_chunk: int = 0,
        prefix_caching: bool,
        speculation: SpeculationConfig | None = None,
        emit: Emit,
        on_death: Callable[[str], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_model_len = max_model_len
        self.slots = SlotManager(runtime, max_num_seqs, prefix_caching)
        kv_pool = runtime.n_ctx if runtime.shape.kv_unified else None
        self.scheduler = Scheduler(self.slots, max_num_seqs, token_budget, kv_pool,
                                   long_prefill_threshold, long_prefill_chunk)
        self.token_budget = max(token_budget, max_num_seqs)
        self.batch = Batch(self.token_budget, max_num_seqs)
        # Prompt-lookup drafts (None: off), priced by this machine's own decode timings.
        self.speculator = None if speculation is None else Speculator(
            speculation, runtime, self.batch, self.token_budget, max_model_len)
        self._emit = emit
        self._on_death = on_death
        self.failure: str | None = None  # why the engine thread died, once it has
        self._inbox: queue.SimpleQueue[_Add | _Abort | _Stop] = queue.SimpleQueue()
        self._requests: dict[str, list[Sequence]] = {}
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.preemptions = 0
        self.logprobs = LogprobReader(runtime, max_model_len)  # only used when asked for
        # request id -> (tokens to produce before failing, whether the failure kills the loop)
        self._faults: dict[str, tuple[int, bool]] = {}

    # -- called from other threads --------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="insieme-engine", daemon=True)
        self._thread.start()

    def add(self, request: GenerationRequest, grammar: str | None = None) -> None:
        """Queue ``request``; every one of its sequences samples within ``grammar``
        (``grammar.compile_constraint`` of its constraint) when one is given."""
        self._inbox.put(_Add(request, grammar))

    def abort(self, request_id: str) -> None:
        self._inbox.put(_Abort(request_id))

    def inject_fault(self, request_id: str, after_tokens: int, *, fatal: bool = False) -> None:
        """Test hook: sampling for this request raises once it has ``after_tokens`` tokens,
        exercising the real per-sequence failure path (see ``INSIEME_FAULT_INJECTION``);
        with ``fatal`` the engine thread itself dies there."""
        self._faults[request_id] = (after_tokens, fatal)

    def _check_fault(self, seq: Sequence) -> None:
        due = self._faults.get(seq.request_id)
        if due is None or due[0] != seq.num_generated:
            return
        del self._faults[seq.request_id]
        if due[1]:
            raise FatalFault("injected fatal fault (X-Insieme-Fault)")
        raise RuntimeError("injected fault (X-Insieme-Fault)")

    def stop(self) -> None:
        self._inbox.put(_Stop())
        if self._thread is not None:
            self._thread.join()
        self.logprobs.close()

    # -- the engine thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.speculator is not None:
                self.speculator.calibrate()
            idle = True
            while self._drain_inbox(block=idle):
                try:
                    ran = self.step()
                except Exception:
                    log.exception("engine step failed; failing the requests in flight")
                    self._fail_everything("the engine failed while running this request")
                    ran = True
                # Nothing could run (say the queue's head waits for slots that only a
                # finishing or aborted request frees): sleep until a message comes.
                idle = not ran
        except BaseException as exc:  # the loop itself broke: the engine is gone
            self.failure = f"the engine stopped: {exc}" if str(exc) else (
                f"the engine stopped: {type(exc).__name__}")
            log.critical("engine thread died: %s", self.failure, exc_info=True)
            if self._on_death is not None:
                self._on_death(self.failure)

    def _drain_inbox(self, *, block: bool) -> bool:
        try:
            message = self._inbox.get() if block else self._inbox.get_nowait()
            while True:
                if isinstance(message, _Stop):
                    return False
                if isinstance(message, _Add):
                    try:
                        self._admit(message.request, message.grammar)
                    except Exception as exc:  # one bad request must not end the loop
                        log.exception("could not admit %s", message.request.request_id)
                        self._reject(message.request, str(exc))
                else:
                    self._abort(message.request_id)
                message = self._inbox.get_nowait()
        except queue.Empty:
            return True

    def _admit(self, request: GenerationRequest, grammar: str | None) -> None:
        seqs = sequences_for(request)
        seed = request.sampling.seed
        # Parsed once, at the first sample; each of the n sequences then clones it.
        prototype = GrammarPrototype(grammar) if grammar is not None else None
        for seq in seqs:
            params = request.sampling
            if seed is not None and seq.index:
                params = replace(params, seed=seed + seq.index)
            seq.sampler = Sampler(params, self.runtime.n_vocab, prototype)
            if self.speculator is not None:
                seq.spec = self.speculator.state()
        leader, followers = seqs[0], seqs[1:]
        leader.followers = followers
        self._requests[request.request_id] = seqs
        self.scheduler.add(leader)

    def _reject(self, request: GenerationRequest, message: str) -> None:
        """End every choice of a request that could not be admitted with an error."""
        for seq in self._requests.pop(request.request_id, []):
            if seq.status is not SeqStatus.FINISHED:
                self.scheduler.finish(seq)
        self._emit([(request.request_id, StepOutput(
            index=i, token=None, text="", finish_reason=FinishReason.ERROR,
            prompt_tokens=len(request.prompt_tokens), error=message))
            for i in range(request.n)])

    def _abort(self, request_id: str) -> None:
        for seq in self._requests.pop(request_id, []):
            if seq.status is not SeqStatus.FINISHED:
                self.scheduler.finish(seq)

    def step(self) -> bool:
        """One decode; False when nothing could be scheduled."""
        work = self.scheduler.schedule()
        if not work:
            return False
        if self.speculator is not None:
            self.speculator.draft(work)
        batch = self.batch
        batch.clear()
        # Every row whose logits are read, in batch order (as llama.cpp packs the logits),
        # and each sampling sequence's rows: its next token's, then one per draft token.
        sample_rows: list[tuple[Sequence, int]] = []
        chains: list[tuple[Sequence, list[int]]] = []
        # Rows in increasing sequence id: with a KV stream per sequence llama.cpp computes
        # each run of consecutive ids in the batch's order separately (llama_batch_allocr::
        # split_equal), so an unsorted batch of 16 decodes cost several passes over the model.
        work.sort(key=lambda item: item.seq.slot or 0)
        for item in work:
            seq = item.seq
            assert seq.slot is not None
            seq_ids = [seq.slot]
            tokens = seq.tokens
            last = item.start + item.count - 1
            for pos in range(item.start, last + 1):
                row = batch.add(tokens[pos], pos, seq_ids, pos == last and item.sample)
            if item.sample:
                rows = [row]
                spec = seq.spec
                if spec is not None and spec.draft:
                    for j, token in enumerate(spec.draft, start=last + 1):
                        rows.append(batch.add(token, j, seq_ids, True))
                sample_rows.extend((seq, r) for r in rows)
                chains.append((seq, rows))
        status = self.runtime.decode(batch)
        if status != 0 and self.speculator is not None and self.speculator.drop(work):
            if status == 1:
                return True  # the drafts took the room: run again without them
        if status == 1:
            self._relieve_kv(work)
            return True
        if status != 0:
            self._fail(work, f"llama_decode failed with status {status}")
            return True
        self.steps += 1
        for item in work:
            item.seq.num_computed += item.count
        picks = self._greedy_picks(sample_rows)
        outputs: list[tuple[str, StepOutput]] = []
        for seq, rows in chains:
            if len(rows) > 1:
                assert self.speculator is not None
                for output in self.speculator.verify(
                        seq, rows, lambda s, r: self._sample(s, r, picks.get(r))):
                    outputs.append((seq.request_id, output))
                continue
            row = rows[0]
            group = [seq, *self.scheduler.unpark(seq)] if seq.followers else [seq]
            for member in group:
                outputs.append((member.request_id, self._sample(member, row, picks.get(row))))
            if seq.spec is not None and seq.spec.shadow is not None:
                seq.spec.judge_shadow(seq.tokens[-1])
        if outputs:
            self._emit(outputs)
        return True

    def _greedy_picks(
        self, sample_rows: list[tuple[Sequence, int]]
    ) -> dict[int, tuple[int, float]]:
        """Token and log-probability for every row sampled plainly greedily, in one numpy
        pass over those rows (llama.cpp's greedy sampler builds a 49k-entry candidate array
        per row, and the logprob then reads the row again: ~0.2 ms a row here)."""
        outputs = [j for j, (seq, _) in enumerate(sample_rows)
                   if seq.request.sampling.plain_greedy and seq.request.sampling.logprobs is None]
        if not outputs:
            return {}
        try:
            tokens, logprobs = self.runtime.greedy_rows(outputs)
        except Exception:  # the per-sequence path reports any failure on its own
            log.exception("greedy pass failed; sampling row by row")
            return {}
        return {sample_rows[j][1]: (token, logprob)
                for j, token, logprob in zip(outputs, tokens.tolist(), logprobs.tolist(),
                                             strict=True)}

    def _sample(self, seq: Sequence, row: int, pick: tuple[int, float] | None) -> StepOutput:
        params = seq.request.sampling
        if not (params.echo and seq.index == 0 and seq.num_generated == 0):
            return self._sample_token(seq, row, pick)
        try:  # echo: the first output carries the prompt's tokens (scored if asked)
            prompt = self.logprobs.prompt(seq.tokens[: seq.prompt_len], params.prompt_logprobs)
        except Exception as exc:
            log.exception("scoring the prompt failed for %s", seq.request_id)
            return self._finish(seq, None, "", FinishReason.ERROR, error=str(exc))
        return replace(self._sample_token(seq, row, pick), prompt=prompt)

    def _sample_token(self, seq: Sequence, row: int, pick: tuple[int, float] | None) -> StepOutput:
        runtime = self.runtime
        params = seq.request.sampling
        try:
            assert seq.sampler is not None
            if self._faults:
                self._check_fault(seq)
            top: tuple[TopLogprob, ...] = ()
            if pick is not None:
                token, logprob = pick
            else:
                token = seq.sampler.sample(runtime.ctx, row)
                if params.logprobs is None:
                    logprob = runtime.logprob(row, token)
                else:
                    logprob, top = self.logprobs.sampled(row, token, params.logprobs)
        except Exception as exc:  # one sequence's failure must not end the others
            log.exception("sampling failed for %s", seq.request_id)
            return self._finish(seq, None, "", FinishReason.ERROR, error=str(exc))
        seq.tokens.append(token)
        piece = b"" if params.logprobs is None else self.logprobs.piece(token)
        if runtime.is_eog(token) and not params.ignore_eos:
            text = self._release(seq, seq.utf8.flush())
            info = TokenInfo(id=token, text="", logprob=logprob, special=True, piece=piece,
                             top_logprobs=top)
            return self._finish(seq, info, text, FinishReason.STOP)
        text = seq.utf8.feed(runtime.piece(token))
        finish: FinishReason | None = None
        if seq.stops is not None:
            text, stopped = seq.stops.feed(text)
            if stopped:
                finish = FinishReason.STOP
        if finish is None and (
            seq.num_generated >= params.max_tokens or len(seq.tokens) >= self.max_model_len
        ):
            finish = FinishReason.LENGTH
            text += self._release(seq, seq.utf8.flush())
        info = TokenInfo(id=token, text=text, logprob=logprob,
                         special=runtime.is_control(token), piece=piece, top_logprobs=top)
        if finish is not None:
            return self._finish(seq, info, text, finish)
        return StepOutput(index=seq.index, token=info, text=text)

    @staticmethod
    def _release(seq: Sequence, tail: str) -> str:
        """Text still held back when a sequence ends for a reason other than a stop string."""
        if seq.stops is None:
            return tail
        text, stopped = seq.stops.feed(tail)
        return text if stopped else text + seq.stops.flush()

    def _finish(
        self,
        seq: Sequence,
        token: TokenInfo | None,
        text: str,
        reason: FinishReason,
        *,
        error: str | None = None,
    ) -> StepOutput:
        seq.finish_reason = reason
        self.scheduler.finish(seq)
        siblings = self._requests.get(seq.request_id, [])
        if all(s.finish_reason is not None for s in siblings):
            self._requests.pop(seq.request_id, None)
        return StepOutput(
            index=seq.index,
            token=token,
            text=text,
            finish_reason=reason,
            prompt_tokens=seq.prompt_len,
            completion_tokens=seq.num_generated,
            cached_tokens=seq.cached_tokens,
            error=error,
            queue_seconds=None if seq.admitted_at is None else seq.admitted_at - seq.arrived_at,
        )

    def _relieve_kv(self, work: list[Work]) -> None:
        """The batch found no room in the KV cache: drop a cached prefix, else preempt."""
        if self.slots.drop_one_cached():
            return
        victim = self.scheduler.preempt_newest()
        if victim is not None:
            self.preemptions += 1
            log.info("KV cache full: preempted %s (it will be recomputed)", victim.request_id)
            return
        self._fail(work, "the KV cache cannot hold this request")

    def _fail(self, work: list[Work], message: str) -> None:
        self._fail_requests({item.seq.request_id for item in work}, message)

    def _fail_everything(self, message: str) -> None:
        self._fail_requests(set(self._requests), message)

    def _fail_requests(self, request_ids: set[str], message: str) -> None:
        """End every choice of these requests with an error; their KV cells are freed."""
        outputs = []
        for request_id in request_ids:
            for seq in list(self._requests.get(request_id, [])):
                if seq.finish_reason is None:
                    self.slots.release(seq, keep=False)
                    outputs.append((request_id, self._finish(
                        seq, None, "", FinishReason.ERROR, error=message)))
        if outputs:
            self._emit(outputs)
