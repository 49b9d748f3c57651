"""The results as a PNG: output throughput and TTFT p50/p99 against concurrency.

With a second run to compare, both share the axes in two colours and a third panel shows
their ratios. Drawn on a bare ``Figure`` with the Agg canvas, never through pyplot, so no GUI
backend or global state is touched (the CLI can run headless, tests in parallel).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from insieme.bench.report import comparison_labels, label_of, ratio

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
    levels = sorted({level["concurrency"] for run in runs for level in run["levels"]})
    _throughput(axes[0], runs, labels)
    _ttft(axes[1], runs, labels)
    _style(axes[0], levels, "output throughput (tokens/s)", "higher is better")
    _style(axes[1], levels, "time to first token (ms)", "lower is better")
    if compare is not None:
        _ratios(axes[2], results, compare)
        _style(axes[2], levels, "ratios of the two runs", "1 = the same")
        axes[2].set_ylabel(f"{labels[0]} / {labels[1]}", fontsize=8)
    server, settings = results.get("server", {}), results.get("settings", {})
    figure.suptitle(f"{server.get('model')} · max_tokens {settings.get('max_tokens')} · "
                    f"{settings.get('requests')} requests per level", fontsize=12)
    machine = results.get("machine", {})
    # As the figure's x label, so the constrained layout keeps it clear of the axes' own.
    figure.supxlabel(f"measured from {machine.get('cpu_model') or machine.get('machine')} · "
                     f"{machine.get('cpu_count')} CPUs · {str(results.get('timestamp', ''))[:16]}",
                     x=0.995, ha="right", fontsize=7, color="#666666")
    figure.savefig(path)


def _throughput(axes: Axes, runs: list[dict[str, Any]], labels: list[str]) -> None:
    best: dict[int, float] = {}
    for run in runs:
        for level in run["levels"]:
            c = level["concurrency"]
            best[c] = max(best.get(c, 0.0), level["output_throughput"])
    floor = 0.12 * max(best.values(), default=0.0)
    for run, label, colour in zip(runs, labels, COLOURS, strict=False):
        x = [level["concurrency"] for level in run["levels"]]
        tokens = [level["output_throughput"] for level in run["levels"]]
        axes.plot(x, tokens, "o-", color=colour, label=label, linewidth=2)
        for xi, yi in zip(x, tokens, strict=True):
            # The higher run's value above its point, the lower's below (unless that would
            # push it under the axis): the two labels never sit on each other.
            above = yi >= best[xi] or yi < floor
            axes.annotate(f"{yi:,.0f}", (xi, yi), textcoords="offset points",
                          xytext=(0, 7 if above else -9), va="bottom" if above else "top",
                          ha="center", fontsize=8, color=colour)
    axes.set_ylim(bottom=0, top=axes.get_ylim()[1] * 1.12)


def _ttft(axes: Axes, runs: list[dict[str, Any]], labels: list[str]) -> None:
    for run, label, colour in zip(runs, labels, COLOURS, strict=False):
        for stat, style in (("p50", "o-"), ("p99", "s--")):
            points = [(level["concurrency"], level["ttft_ms"][stat]) for level in run["levels"]
                      if level["ttft_ms"][stat] is not None]
            if points:
                axes.plot(*zip(*points, strict=True), style, color=colour,
                          label=f"{label} {stat}", linewidth=2 if stat == "p50" else 1.3)
    axes.set_ylim(bottom=0)


def _ratios(axes: Axes, results: dict[str, Any], other: dict[str, Any]) -> None:
    theirs = {level["concurrency"]: level for level in other["levels"]}
    series: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
        ("output tok/s (higher is better)", lambda lv: lv["output_throughput"]),
        ("TTFT p50 (lower is better)", lambda lv: lv["ttft_ms"]["p50"]),
    )
    for (name, value), colour in zip(series, RATIO_COLOURS, strict=True):
        points = [(lv["concurrency"], r) for lv in results["levels"]
                  if lv["concurrency"] in theirs
                  and (r := ratio(value(lv), value(theirs[lv["concurrency"]]))) is not None]
        if not points:
            continue
        axes.plot(*zip(*points, strict=True), "o-", color=colour, label=name, linewidth=2)
        for xi, yi in points:
            axes.annotate(f"{yi:.2f}×", (xi, yi), textcoords="offset points", xytext=(0, 7),
                          ha="center", fontsize=8, color=colour)
    axes.axhline(1.0, color="#444444", linewidth=1, linestyle=":")
    axes.set_ylim(bottom=0, top=max(axes.get_ylim()[1] * 1.12, 1.2))


def _style(axes: Axes, levels: list[int], title: str, hint: str) -> None:
    axes.set_title(f"{title} — {hint}", fontsize=10)
    axes.set_xlabel("concurrent clients")
    # Concurrency grows geometrically (1, 4, 16): a log axis spaces it evenly.
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(levels))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([str(level) for level in levels])
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="best")
