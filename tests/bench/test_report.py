"""Tables, JSON and plots from results documents (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from insieme.bench.metrics import RequestRecord, summarize
from insieme.bench.plot import plot_results
from insieme.bench.report import build_results, load_results, print_report, write_json
from insieme.errors import ConfigError


def results(label: str, speed: float, levels: tuple[int, ...] = (1, 4),
            failing_level: int | None = None) -> dict[str, Any]:
    summaries = []
    for c in levels:
        if c == failing_level:
            records = [RequestRecord(error="500", error_message="engine fell over")] * 4
        else:
            records = [RequestRecord(chunk_times=[0.1 / speed, 0.2 / speed], e2e=0.2 / speed,
                                     output_tokens=2)] * 4
        summaries.append(summarize(records, concurrency=c, duration_s=1.0 / speed))
    server = {"label": label, "base_url": "http://h/v1", "model": "m"}
    return build_results({"concurrency": list(levels), "requests": 4, "max_tokens": 2},
                         server, summaries)


def render(doc: dict[str, Any], compare: dict[str, Any] | None = None) -> str:
    console = Console(record=True, width=160)
    print_report(doc, console, compare)
    return console.export_text()


def test_comparison_puts_runs_side_by_side_with_ratios() -> None:
    text = render(results("fast", 2.0), results("slow", 1.0))
    assert "fast vs slow (ratio = fast / slow)" in text
    assert "2.00×" in text  # throughput doubled
    assert "0.50×" in text  # latency halved


def test_two_runs_with_one_label_are_told_apart() -> None:
    mine, theirs = results("insieme", 2.0), results("insieme", 1.0)
    theirs["timestamp"] = "2020-01-01T00:00:00+00:00"
    assert "insieme (2020-01-01 00:00)" in render(mine, theirs)


def test_runs_without_a_shared_level() -> None:
    assert "share no concurrency level" in render(results("a", 1.0, (1,)),
                                                  results("b", 1.0, (8,)))


def test_failures_are_shown_with_their_message() -> None:
    text = render(results("a", 1.0, failing_level=4))
    assert "500×4" in text
    assert "concurrency 4: 500: engine fell over" in text


def test_json_round_trip_and_bad_files(tmp_path: Path) -> None:
    doc = results("a", 1.0)
    write_json(doc, tmp_path / "r.json")
    assert load_results(tmp_path / "r.json") == doc
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="not an insieme bench results file"):
        load_results(tmp_path / "other.json")


def test_plot_survives_a_level_without_successes(tmp_path: Path) -> None:
    # Compared, so the ratio panel meets the missing TTFT too (the single-run plot is
    # drawn end to end in test_cli).
    path = tmp_path / "p.png"
    plot_results(results("a", 2.0, (1, 4, 16), failing_level=16), path, results("b", 1.0))
    assert path.read_bytes().startswith(b"\x89PNG")


def test_comparison_warns_when_runs_are_not_like_for_like() -> None:
    mine, theirs = results("a", 1.0), results("b", 1.0)
    theirs["settings"]["max_tokens"] = 64
    assert "the runs differ: max_tokens 2 vs 64" in render(mine, theirs)
