"""Request and sequence state, explicit: one Sequence per choice, with an Enum status."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

from insieme.engine.llama.sampler import Sampler
from insieme.engine.llama.speculation import SpecState
from insieme.engine.text import StopMatcher, Utf8Assembler
from insieme.engine.types import FinishReason, GenerationRequest

_arrival = itertools.count()


class SeqStatus(enum.Enum):
    WAITING = "waiting"  # queued, holds no KV slot
    RUNNING = "running"  # holds a slot; prefilling or decoding
    PARKED = "parked"  # holds a slot, waits for its group leader's shared prefill (n > 1)
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One choice of one request: its tokens, its place in the KV cache, its text state."""

    request: GenerationRequest
    index: int
    tokens: list[int]
    prompt_len: int
    sampler: Sampler | None = None
    status: SeqStatus = SeqStatus.WAITING
    slot: int | None = None  # KV sequence id while it holds one
    num_computed: int = 0  # tokens of ``tokens`` already in the KV cache
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache
    followers: list[Sequence] = field(default_factory=list)  # get this one's prefill (n > 1)
    arrival: int = field(default_factory=lambda: next(_arrival))
    arrived_at: float = field(default_factory=time.monotonic)
    admitted_at: float | None = None  # when it first got a KV slot: queue time ends
    utf8: Utf8Assembler = field(default_factory=Utf8Assembler)
    stops: StopMatcher | None = None
    finish_reason: FinishReason | None = None
    spec: SpecState | None = None  # its drafting, when speculation is on

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def num_pending(self) -> int:
        """Tokens to feed before the next sample: 1 while decoding, more while prefilling."""
        return len(self.tokens) - self.num_computed


def sequences_for(request: GenerationRequest) -> list[Sequence]:
    """The n sequences of a request; the first prefills the prompt for all of them."""
    params = request.sampling
    seqs = [
        Sequence(
            request=request,
            index=i,
            tokens=list(request.prompt_tokens),
            prompt_len=len(request.prompt_tokens),
            stops=StopMatcher(params.stop) if params.stop else None,
        )
        for i in range(request.n)
    ]
    return seqs
