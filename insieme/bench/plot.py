"""The results as a PNG: output throughput and TTFT p50/p99 against concurrency, or against
the request rate for an open-loop run (``inf`` drawn one step past the highest rate).

With a second run to compare, both share the axes in two colours and a third panel shows
their ratios. Drawn on a bare ``Figure`` with the Agg canvas, never through pyplot, so no GUI
backend or global state is touched (the CLI can run headless, tests in parallel).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from insieme.bench.report import comparison_labels, label_of, level_key, ratio

LevelKey = tuple[str, float]

COLOURS = ("#1f6feb", "#d9480f")  # this run, the compared run
RATIO_COLOURS = ("#2b8a3e", "#7048e8")


def plot_results(results: dict[str, Any], path: str | Path,
                 compare: dict[str, Any] | None = None) -> None:
    """Write the PNG; with ``compare``, both runs share the axes and a panel shows ratios."""
    runs = [results] if compare is None else [results, compare]
    labels = [label_of(results)] if compare is None else list(comparison_labels(results, compare))
    figure = Figure(figsize=(11 if compare is None else 16, 4.6), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(runs) + 1)
    at = _positions(runs)
    _throughput(axes[0], runs, labels, at)
    _ttft(axes[1], runs, labels, at)
    _style(axes[0], at, "output throughput (tokens/s)", "higher is better")
    _style(axes[1], at, "time to first token (ms)", "lower is better")
    if compare is not None:
        _ratios(axes[2], results, compare, at)
        _style(axes[2], at, "ratios of the two runs", "1 = the same")
        axes[2].set_ylabel(f"{labels[0]} / {labels[1]}", fontsize=8)
    server, settings = results.get("server", {}), results.get("settings", {})
    figure.suptitle(f"{server.get('model')} · {settings.get('dataset') or 'builtin'} · "
                    f"max_tokens {settings.get('max_tokens')} · "
                    f"{settings.get('requests')} requests per level", fontsize=12)
    machine = results.get("machine", {})
    # As the figure's x label, so the constrained layout keeps it clear of the axes' own.
    figure.supxlabel(f"measured from {machine.get('cpu_model') or machine.get('machine')} · "
                     f"{machine.get('cpu_count')} CPUs · {str(results.get('timestamp', ''))[:16]}",
                     x=0.995, ha="right", fontsize=7, color="#666666")
    figure.savefig(path)


def _positions(runs: list[dict[str, Any]]) -> dict[LevelKey, float]:
    """Where each level sits on the x axis: its concurrency, or its rate. Only levels of the
    first run's kind are drawn (a closed-loop run and an open-loop one share no axis)."""
    keys = {level_key(level) for run in runs for level in run["levels"]}
    kind = level_key(runs[0]["levels"][0])[0] if runs[0]["levels"] else "concurrency"
    finite = [value for k, value in keys if k == kind and math.isfinite(value) and value > 0]
    beyond = 2.0 * max(finite, default=0.5)
    return {(k, value): (value if math.isfinite(value) else beyond)
            for k, value in keys if k == kind and value > 0}


def _points(run: dict[str, Any], at: dict[LevelKey, float],
            value: Callable[[dict[str, Any]], float | None]) -> list[tuple[float, float]]:
    return [(at[level_key(level)], y) for level in run["levels"]
            if level_key(level) in at and (y := value(level)) is not None]


def _throughput(axes: Axes, runs: list[dict[str, Any]], labels: list[str],
                at: dict[LevelKey, float]) -> None:
    best: dict[float, float] = {}
    for run in runs:
        for x, y in _points(run, at, lambda lv: lv["output_throughput"]):
            best[x] = max(best.get(x, 0.0), y)
    floor = 0.12 * max(best.values(), default=0.0)
    for run, label, colour in zip(runs, labels, COLOURS, strict=False):
        points = _points(run, at, lambda lv: lv["output_throughput"])
        if not points:
            continue
        axes.plot(*zip(*points, strict=True), "o-", color=colour, label=label, linewidth=2)
        for xi, yi in points:
            # The higher run's value above its point, the lower's below (unless that would
            # push it under the axis): the two labels never sit on each other.
            above = yi >= best[xi] or yi < floor
            axes.annotate(f"{yi:,.0f}", (xi, yi), textcoords="offset points",
                          xytext=(0, 7 if above else -9), va="bottom" if above else "top",
                          ha="center", fontsize=8, color=colour)
    axes.set_ylim(bottom=0, top=axes.get_ylim()[1] * 1.12)


def _ttft_of(stat: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda level: level["ttft_ms"][stat]


def _ttft(axes: Axes, runs: list[dict[str, Any]], labels: list[str],
          at: dict[LevelKey, float]) -> None:
    for run, label, colour in zip(runs, labels, COLOURS, strict=False):
        for stat, style in (("p50", "o-"), ("p99", "s--")):
            points = _points(run, at, _ttft_of(stat))
            if points:
                axes.plot(*zip(*points, strict=True), style, color=colour,
                          label=f"{label} {stat}", linewidth=2 if stat == "p50" else 1.3)
    axes.set_ylim(bottom=0)


def _ratios(axes: Axes, results: dict[str, Any], other: dict[str, Any],
            at: dict[LevelKey, float]) -> None:
    theirs = {level_key(level): level for level in other["levels"]}
    series: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
        ("output tok/s (higher is better)", lambda lv: lv["output_throughput"]),
        ("TTFT p50 (lower is better)", lambda lv: lv["ttft_ms"]["p50"]),
    )
    for (name, value), colour in zip(series, RATIO_COLOURS, strict=True):
        points = [(at[key], r) for lv in results["levels"]
                  if (key := level_key(lv)) in theirs and key in at
                  and (r := ratio(value(lv), value(theirs[key]))) is not None]
        if not points:
            continue
        axes.plot(*zip(*points, strict=True), "o-", color=colour, label=name, linewidth=2)
        for xi, yi in points:
            axes.annotate(f"{yi:.2f}×", (xi, yi), textcoords="offset points", xytext=(0, 7),
                          ha="center", fontsize=8, color=colour)
    axes.axhline(1.0, color="#444444", linewidth=1, linestyle=":")
    axes.set_ylim(bottom=0, top=max(axes.get_ylim()[1] * 1.12, 1.2))


def _style(axes: Axes, at: dict[LevelKey, float], title: str, hint: str) -> None:
    axes.set_title(f"{title} — {hint}", fontsize=10)
    rates = any(kind == "rate" for kind, _ in at)
    axes.set_xlabel("request rate (req/s)" if rates else "concurrent clients")
    ticks = sorted((x, "inf" if math.isinf(value) else f"{value:g}")
                   for (_, value), x in at.items())
    # Concurrency and rates grow geometrically (1, 4, 16): a log axis spaces them evenly.
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator([x for x, _ in ticks]))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([label for _, label in ticks])
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="best")
