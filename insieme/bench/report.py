"""Results as a JSON document, and as tables for the terminal (one run, or two compared)."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from insieme import __version__
from insieme.bench.metrics import LevelMetrics
from insieme.bench.settings import format_rate
from insieme.errors import ConfigError

# (results key, distribution key or None, column title, higher is better)
COMPARED = (
    ("request_throughput", None, "req/s", True),
    ("output_throughput", None, "output tok/s", True),
    ("ttft_ms", "p50", "TTFT p50 ms", False),
    ("ttft_ms", "p99", "TTFT p99 ms", False),
    ("tpot_ms", "p50", "TPOT p50 ms", False),
    ("itl_ms", "p50", "ITL p50 ms", False),
    ("e2e_ms", "p50", "E2E p50 ms", False),
)
# Shown and compared when the run had SLOs (--slo-ttft, --slo-tpot).
GOODPUT = (
    ("goodput", None, "goodput req/s", True),
    ("slo_attainment", None, "SLO met", True),
)
LATENCIES = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "E2E"))


def build_results(
    settings: dict[str, Any], server: dict[str, Any], levels: list[LevelMetrics]
) -> dict[str, Any]:
    """The results document: what was measured, where, when, and the numbers per level."""
    sources = {level.output_tokens_source for level in levels} - {"none"}
    return {
        "tool": f"insieme bench {__version__}",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "server": server,
        "settings": settings,
        "output_tokens_source": sources.pop() if len(sources) == 1 else
        ("mixed" if sources else "none"),
        "levels": [asdict(level) | {"request_rate": json_rate(level.request_rate)}
                   for level in levels],
    }


def json_rate(rate: float | None) -> float | str | None:
    """JSON has no infinity: ``inf`` is written as --request-rate spells it (float() reads it)."""
    return "inf" if rate is not None and math.isinf(rate) else rate


def level_key(level: dict[str, Any]) -> tuple[str, float]:
    """What makes two runs' levels the same level: the concurrency, or the request rate."""
    rate = level.get("request_rate")
    if rate is None:
        return "concurrency", float(level.get("concurrency") or 0)
    return "rate", float(rate)


def level_label(level: dict[str, Any]) -> str:
    """A level's first cell: ``4`` (clients), ``2 req/s`` or ``inf``, with its cap if any."""
    rate = level.get("request_rate")
    if rate is None:
        return str(level.get("concurrency"))
    cap = level.get("concurrency")
    text = format_rate(float(rate))
    return f"{text} (max {cap})" if cap is not None else text


def level_name(level: dict[str, Any]) -> str:
    """A level in a sentence: ``concurrency 4``, ``rate 2 req/s``."""
    prefix = "concurrency" if level.get("request_rate") is None else "rate"
    return f"{prefix} {level_label(level)}"


def _level_column(levels: list[dict[str, Any]]) -> str:
    kinds = {level_key(level)[0] for level in levels}
    return {"concurrency": "concurrency", "rate": "request rate"}.get(
        kinds.pop() if len(kinds) == 1 else "", "level")


def _has_goodput(*runs: dict[str, Any]) -> bool:
    return any(level.get("goodput") is not None for run in runs for level in run["levels"])


def describe_workload(settings: dict[str, Any]) -> str:
    """The dataset, max_tokens and the SLOs, in a few words, for titles."""
    dataset = settings.get("dataset") or "builtin"
    params = settings.get("dataset_params") or {}
    text = f"dataset {dataset}"
    if dataset == "random" and params:
        text += (f" (input {params.get('input_len')}, output {params.get('output_len')}, "
                 f"range ±{params.get('range_ratio')})")
    elif dataset == "multi-turn" and params:
        details = [f"{params.get('conversations')} × {params.get('turns')} turns"]
        if params.get("context_words"):
            details.append(f"{params['context_words']}-word documents")
        if params.get("system_prompt") is False:
            details.append("no system prompt")
        text += f" ({', '.join(details)})"
    if dataset not in ("random", "grounded"):  # those give each request its own
        text += f" · max_tokens {settings.get('max_tokens')}"
    slos = describe_slos(settings)
    return text + (f" · SLO {slos}" if slos else "")


def describe_slos(settings: dict[str, Any]) -> str:
    """``TTFT ≤ 500 ms, TPOT ≤ 50 ms``, or empty."""
    return ", ".join(f"{name} ≤ {settings[key]:g} ms" for key, name in
                     (("slo_ttft_ms", "TTFT"), ("slo_tpot_ms", "TPOT"))
                     if settings.get(key) is not None)


def machine_info() -> dict[str, Any]:
    """The machine that ran the benchmark (the server's, too, when it ran on localhost)."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or None,
        "memory_gib": _memory_gib(),
    }


def _proc_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    total = _proc_field("/proc/meminfo", "MemTotal")  # "131072000 kB"
    if not total or not total.split()[0].isdigit():
        return None
    return round(int(total.split()[0]) / 2**20, 1)


def write_json(results: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def load_results(path: str | Path) -> dict[str, Any]:
    """A results file written earlier (for --compare); a bad one is a ``ConfigError``."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--compare: cannot read {path}: {exc}") from exc
    if not isinstance(results, dict) or not isinstance(results.get("levels"), list):
        raise ConfigError(f"--compare: {path} is not an insieme bench results file")
    return results


def label_of(results: dict[str, Any], fallback: str = "run") -> str:
    return str((results.get("server") or {}).get("label") or fallback)


def _value(level: dict[str, Any], key: str, stat: str | None) -> float | None:
    value = level.get(key) if stat is None else (level.get(key) or {}).get(stat)
    return float(value) if isinstance(value, int | float) else None


def _fmt(value: float | None, key: str = "") -> str:
    if value is None:
        return "—"
    if key == "slo_attainment":
        return f"{value:.0%}"
    # Three significant figures or so: enough to compare, few enough to read.
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _errors(level: dict[str, Any]) -> str:
    errors = level.get("errors") or {}
    return ", ".join(f"{kind}×{count}" for kind, count in errors.items()) or "0"


def print_report(results: dict[str, Any], console: Console,
                 compare: dict[str, Any] | None = None) -> None:
    """The summary and latency tables, then the comparison when there is one."""
    settings, server = results.get("settings", {}), results.get("server", {})
    levels = results["levels"]
    title = (f"{label_of(results)} · {server.get('model')} · {describe_workload(settings)} · "
             f"{settings.get('requests')} requests/level")
    summary = Table(title=title, title_justify="left")
    first = _level_column(levels)
    for name in (first, "ok", "errors", *(heading for _, _, heading, _ in COMPARED)):
        summary.add_column(name, justify="left" if name == "errors" else "right")
    for level in levels:
        summary.add_row(
            level_label(level), str(level["completed"]), _errors(level),
            *(_fmt(_value(level, key, stat), key) for key, stat, _, _ in COMPARED),
        )
    console.print(summary)
    if _has_goodput(results):
        print_goodput(results, console)
    latency = Table(title="latency (ms)", title_justify="left")
    for name in (first, "metric", "mean", "p50", "p90", "p99"):
        latency.add_column(name, justify="left" if name == "metric" else "right")
    for level in levels:
        for key, name in LATENCIES:
            dist = level.get(key) or {}
            latency.add_row(level_label(level), name,
                            *(_fmt(dist.get(stat)) for stat in ("mean", "p50", "p90", "p99")),
                            end_section=key == LATENCIES[-1][0])
    console.print(latency)
    for note in notes(results):
        console.print(f"[yellow]note:[/] {note}")
    if compare is not None:
        print_comparison(results, compare, console)


def print_goodput(results: dict[str, Any], console: Console) -> None:
    """Goodput beside throughput: the requests that met every SLO, per level."""
    slos = describe_slos(results.get("settings") or {})
    table = Table(title=f"goodput: requests that met {slos or 'the SLOs'}", title_justify="left")
    levels = results["levels"]
    for name in (_level_column(levels), "requests", "met", "share", "req/s", "goodput req/s"):
        table.add_column(name, justify="right")
    for level in levels:
        table.add_row(level_label(level), str(level.get("requests")), str(level.get("slo_met")),
                      _fmt(_value(level, "slo_attainment", None), "slo_attainment"),
                      _fmt(_value(level, "request_throughput", None)),
                      _fmt(_value(level, "goodput", None)))
    console.print(table)


def notes(results: dict[str, Any]) -> list[str]:
    """What a reader must know to trust the numbers: token counting, errors."""
    found = []
    if results.get("output_tokens_source") in ("chunks", "mixed"):
        found.append("the server sent no usage for some or all requests: output tokens were "
                     "counted as content chunks, which may differ from real tokens")
    for level in results["levels"]:
        for kind, example in (level.get("error_examples") or {}).items():
            found.append(f"{level_name(level)}: {kind}: {example}")
        if level.get("reconnects"):
            found.append(f"{level_name(level)}: {level['reconnects']} requests "
                         "were retried once: the server closed a kept-alive connection "
                         "instead of answering")
    return found


def print_comparison(results: dict[str, Any], other: dict[str, Any], console: Console) -> None:
    """Both runs side by side per level, with this run's value over the other's."""
    mine, theirs = comparison_labels(results, other)
    table = Table(title=f"{mine} vs {theirs} (ratio = {mine} / {theirs})", title_justify="left")
    first = _level_column(results["levels"] + other["levels"])
    for name in (first, "metric", mine, theirs, "ratio"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    rows = COMPARED + (GOODPUT if _has_goodput(results, other) else ())
    others = {level_key(level): level for level in other["levels"]}
    shared = [level for level in results["levels"] if level_key(level) in others]
    for level in shared:
        peer = others[level_key(level)]
        for key, stat, name, higher_better in rows:
            a, b = _value(level, key, stat), _value(peer, key, stat)
            table.add_row(level_label(level), name, _fmt(a, key), _fmt(b, key),
                          _ratio_cell(a, b, higher_better), end_section=name == rows[-1][2])
    console.print(table)
    if not shared:
        kind = first if first != "level" else "load"
        console.print(f"[yellow]note:[/] the two runs share no {kind} level")
    for difference in setting_differences(results, other):
        console.print(f"[yellow]note:[/] the runs differ: {difference}")


# Settings that change what is measured, with what a results file that predates them ran.
_LIKE_FOR_LIKE = {"max_tokens": None, "requests": None, "temperature": None, "ignore_eos": None,
                  "prompts_source": None, "dataset": "builtin", "arrivals": "closed-loop",
                  "max_concurrency": None, "slo_ttft_ms": None, "slo_tpot_ms": None}
_GENERATED = ("random", "multi-turn", "grounded")


def setting_differences(results: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """What makes two runs not like for like (a ratio across them then means less)."""
    mine_settings, their_settings = results.get("settings") or {}, other.get("settings") or {}
    keys = list(_LIKE_FOR_LIKE)
    if {mine_settings.get("dataset"), their_settings.get("dataset")} <= {"random", "grounded"}:
        keys.remove("max_tokens")  # each request has its own
    # The seed and the dataset's parameters matter only where something was drawn from them.
    if {mine_settings.get("dataset"), their_settings.get("dataset")} & set(_GENERATED):
        keys.append("dataset_params")
        keys.append("seed")
    elif "poisson" in (mine_settings.get("arrivals"), their_settings.get("arrivals")):
        keys.append("seed")
    pairs = [(key, mine_settings.get(key, _LIKE_FOR_LIKE.get(key)),
              their_settings.get(key, _LIKE_FOR_LIKE.get(key))) for key in keys]
    pairs.append(("model", (results.get("server") or {}).get("model"),
                  (other.get("server") or {}).get("model")))
    return [f"{name} {mine} vs {theirs}" for name, mine, theirs in pairs if mine != theirs]


def comparison_labels(results: dict[str, Any], other: dict[str, Any]) -> tuple[str, str]:
    mine, theirs = label_of(results, "this run"), label_of(other, "other run")
    if mine == theirs:  # two runs of one server (before/after): tell them apart by time
        mine = f"{mine} ({_short_time(results, 'this run')})"
        theirs = f"{theirs} ({_short_time(other, 'other run')})"
    return mine, theirs


def _short_time(results: dict[str, Any], fallback: str) -> str:
    stamp = str(results.get("timestamp") or "")  # "2026-01-02T03:04:05+00:00"
    return stamp[:16].replace("T", " ") if stamp else fallback


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _ratio_cell(a: float | None, b: float | None, higher_better: bool) -> str:
    value = ratio(a, b)
    if value is None:
        return "—"
    better = value > 1.02 if higher_better else value < 0.98
    worse = value < 0.98 if higher_better else value > 1.02
    colour = "green" if better else "red" if worse else "default"
    return f"[{colour}]{value:.2f}×[/]"
