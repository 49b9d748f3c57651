"""``insieme bench``: measure any OpenAI-compatible server the way serving engineers do.

From a script::

    from insieme.bench import BenchSettings, run_bench, write_json
    results = run_bench(BenchSettings(base_url="http://127.0.0.1:8000/v1", model="m"))
    write_json(results, "results.json")

The layers: ``client`` (one timed streamed request), ``datasets`` (what each request sends:
``prompts``, ``multi_turn``, ``grounded``), ``schedule`` (open-loop arrival times), ``loops``
(one level, closed or open loop), ``runner`` (a whole run), ``metrics`` (pure math on
timings, goodput), ``report`` and ``plot`` (JSON, tables, PNG), ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from insieme.bench.client import BenchError
    from insieme.bench.datasets import build_workload
    from insieme.bench.metrics import Distribution, LevelMetrics, RequestRecord, Slo, summarize
    from insieme.bench.plot import plot_results
    from insieme.bench.prompts import Prompt, builtin_prompts, load_prompts
    from insieme.bench.report import load_results, print_report, write_json
    from insieme.bench.runner import bench, run_bench
    from insieme.bench.schedule import arrival_times
    from insieme.bench.settings import BenchSettings, Level

# Imported on first use: `insieme serve` imports the bench CLI to list the subcommand, and
# should not pay for matplotlib and httpx on every start.
_EXPORTS = {
    "BenchError": "client",
    "BenchSettings": "settings",
    "Distribution": "metrics",
    "Level": "settings",
    "LevelMetrics": "metrics",
    "Prompt": "prompts",
    "RequestRecord": "metrics",
    "Slo": "metrics",
    "arrival_times": "schedule",
    "bench": "runner",
    "build_workload": "datasets",
    "builtin_prompts": "prompts",
    "load_prompts": "prompts",
    "load_results": "report",
    "plot_results": "plot",
    "print_report": "report",
    "run_bench": "runner",
    "summarize": "metrics",
    "write_json": "report",
}

__all__ = [
    "BenchError",
    "BenchSettings",
    "Distribution",
    "Level",
    "LevelMetrics",
    "Prompt",
    "RequestRecord",
    "Slo",
    "arrival_times",
    "bench",
    "build_workload",
    "builtin_prompts",
    "load_prompts",
    "load_results",
    "plot_results",
    "print_report",
    "run_bench",
    "summarize",
    "write_json",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'insieme.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"insieme.bench.{module}"), name)
