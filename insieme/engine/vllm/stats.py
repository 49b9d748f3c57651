"""vLLM's own counters, as its scheduler reports them after each step: requests running and
waiting, and the share of KV blocks in use. (Prefix cache hits reach the API layer per
request, as ``cached_tokens``, which vLLM counts.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SchedulerCounters:
    """The last step's scheduler stats, summed over vLLM's engines (data parallel ranks)."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0  # 0..1 of the KV blocks, averaged over the engines

    def __post_init__(self) -> None:
        self._per_engine: dict[int, tuple[int, int, float]] = {}

    def record(self, stats: Any, engine: int) -> None:
        self._per_engine[engine] = (stats.num_running_reqs, stats.num_waiting_reqs,
                                    stats.kv_cache_usage)
        values = self._per_engine.values()
        self.running = sum(v[0] for v in values)
        self.waiting = sum(v[1] for v in values)
        self.kv_usage = sum(v[2] for v in values) / len(self._per_engine)


def stat_logger_factory(counters: SchedulerCounters) -> Any:
    """A vLLM stat logger factory that feeds ``counters`` (vLLM calls it per engine)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _Logger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any,
                   mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                counters.record(scheduler_stats, engine_idx)

        def log_engine_initialized(self) -> None:
            pass

    return _Logger
