"""Serving metrics from per-request timings, with the definitions ``vllm bench serve`` uses.

- TTFT: from sending the request to the first chunk with non-empty content.
- ITL: the gaps between consecutive content chunks (all requests' gaps pooled).
- TPOT: per request, (e2e - TTFT) / (output tokens - 1); requests with one token or fewer
  have none.
- E2E: from sending the request to its last data chunk.
- Throughput: completed requests and output tokens over the level's wall time.
- Goodput: completed requests that met every given SLO (TTFT, TPOT) over the wall time, as
  ``vllm bench serve --goodput`` counts them; a request with one output token has no TPOT and
  meets a TPOT SLO. The attainment is the fraction of all the level's requests (failed ones
  included) that met them.

Percentiles interpolate linearly between ranks, as ``numpy.percentile`` does by default.
Times are kept in seconds while measuring and reported in milliseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

PERCENTILES = (50, 90, 99)

TokenSource = Literal["usage", "chunks", "mixed", "none"]


@dataclass(slots=True)
class RequestRecord:
    """One benchmark request. Times are seconds since the request was sent."""

    chunk_times: list[float] = field(default_factory=list)  # content chunks' arrival
    e2e: float | None = None  # the last data chunk's arrival (None until it finished)
    output_tokens: int | None = None  # the server's usage.completion_tokens, if it sent one
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the server reused from its cache
    error: str | None = None  # what went wrong, as a key: "401", "timeout", "stream_error"...
    error_message: str | None = None
    unanswered: bool = False  # the connection closed before any response came
    reconnects: int = 0  # tries lost to a kept-alive connection the server had closed
    sent_at: float | None = None  # when it was sent, in seconds since its level started
    text: str = ""  # the reply's content (a multi-turn conversation sends it back)

    @property
    def ok(self) -> bool:
        return self.error is None and self.e2e is not None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] if self.chunk_times else None

    @property
    def itl(self) -> list[float]:
        times = self.chunk_times
        return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]

    @property
    def output_len(self) -> int:
        """Output tokens: the server's count, else one per content chunk."""
        return self.output_tokens if self.output_tokens is not None else len(self.chunk_times)

    @property
    def tpot(self) -> float | None:
        ttft = self.ttft
        if ttft is None or self.e2e is None or self.output_len <= 1:
            return None
        return (self.e2e - ttft) / (self.output_len - 1)


@dataclass(frozen=True, slots=True)
class Slo:
    """Service-level objectives a request must meet to count toward goodput (ms; None: none)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        if self.ttft_ms is not None and (record.ttft is None
                                         or record.ttft * 1000.0 > self.ttft_ms):
            return False
        tpot = record.tpot
        return self.tpot_ms is None or tpot is None or tpot * 1000.0 <= self.tpot_ms


@dataclass(frozen=True, slots=True)
class Distribution:
    """Mean and percentiles of one latency, in milliseconds (None when there is no sample)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of_seconds(cls, samples: Sequence[float]) -> Distribution:
        if not samples:
            return cls(0, None, None, None, None)
        ordered = sorted(s * 1000.0 for s in samples)
        p50, p90, p99 = (percentile(ordered, q) for q in PERCENTILES)
        return cls(len(ordered), math.fsum(ordered) / len(ordered), p50, p90, p99)


@dataclass(frozen=True, slots=True)
class LevelMetrics:
    """Everything measured at one level: a closed loop of ``concurrency`` clients, or (when
    ``request_rate`` is set) open-loop arrivals with ``concurrency`` as the cap, if any."""

    concurrency: int | None
    requests: int
    completed: int
    failed: int
    errors: dict[str, int]  # failures by status code or kind
    error_examples: dict[str, str]  # the first message seen for each kind
    reconnects: int  # requests retried on a new connection (see client.stream_chat)
    duration_s: float
    request_throughput: float  # completed requests per second
    output_throughput: float  # output tokens per second
    total_output_tokens: int
    total_input_tokens: int | None  # None when the server reported no usage
    total_cached_tokens: int | None  # of those, reused from a prefix cache (if reported)
    output_tokens_source: TokenSource
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution
    e2e_ms: Distribution
    request_rate: float | None = None  # open loop: requests/s (inf: all at once)
    goodput: float | None = None  # requests/s that met every SLO (None: no SLO given)
    slo_met: int | None = None
    slo_attainment: float | None = None  # slo_met over all the level's requests


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, interpolating linearly between ranks."""
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def token_source(records: Sequence[RequestRecord]) -> TokenSource:
    """Where the output token counts came from, over the completed requests."""
    with_usage = sum(1 for r in records if r.output_tokens is not None)
    if not records:
        return "none"
    if with_usage == len(records):
        return "usage"
    return "chunks" if with_usage == 0 else "mixed"


def summarize(
    records: Sequence[RequestRecord],
    *,
    concurrency: int | None,
    duration_s: float,
    request_rate: float | None = None,
    slo: Slo | None = None,
) -> LevelMetrics:
    """Aggregate one level's requests; failed requests count only as errors (and as missing
    the SLOs, when there are any)."""
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    errors = Counter(r.error or "unfinished" for r in failed)
    examples: dict[str, str] = {}
    for r in failed:
        examples.setdefault(r.error or "unfinished", r.error_message or "")
    total_output = sum(r.output_len for r in done)
    prompt_counts = [r.prompt_tokens for r in done if r.prompt_tokens is not None]
    # A zero duration only happens with an empty level; avoid dividing by it.
    wall = duration_s if duration_s > 0 else math.inf
    met = sum(1 for r in done if slo.met_by(r)) if slo is not None else None
    return LevelMetrics(
        concurrency=concurrency,
        requests=len(records),
        completed=len(done),
        failed=len(failed),
        errors=dict(sorted(errors.items())),
        error_examples=dict(sorted(examples.items())),
        reconnects=sum(r.reconnects for r in records),
        duration_s=duration_s,
        request_throughput=len(done) / wall,
        output_throughput=total_output / wall,
        total_output_tokens=total_output,
        total_input_tokens=sum(prompt_counts) if prompt_counts else None,
        total_cached_tokens=sum(cached) if (cached := [
            r.cached_tokens for r in done if r.cached_tokens is not None]) else None,
        output_tokens_source=token_source(done),
        ttft_ms=Distribution.of_seconds([t for r in done if (t := r.ttft) is not None]),
        tpot_ms=Distribution.of_seconds([t for r in done if (t := r.tpot) is not None]),
        itl_ms=Distribution.of_seconds([gap for r in done for gap in r.itl]),
        e2e_ms=Distribution.of_seconds([r.e2e for r in done if r.e2e is not None]),
        request_rate=request_rate,
        goodput=met / wall if met is not None else None,
        slo_met=met,
        slo_attainment=met / len(records) if met is not None and records else None,
    )
