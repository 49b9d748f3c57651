"""Tables, JSON and plots from results documents (no server needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from insieme.bench.metrics import RequestRecord, Slo, summarize
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


def open_loop_results(label: str, speed: float, rates: tuple[float, ...] = (2.0, math.inf),
                      slo: Slo | None = None) -> dict[str, Any]:
    quick = RequestRecord(chunk_times=[0.1 / speed, 0.2 / speed], e2e=0.2 / speed,
                          output_tokens=2)
    slow = RequestRecord(chunk_times=[1.0, 1.1], e2e=1.1, output_tokens=2)
    summaries = [summarize([quick] * 3 + [slow], concurrency=None, duration_s=1.0 / speed,
                           request_rate=rate, slo=slo) for rate in rates]
    settings = {"request_rate": ["inf" if math.isinf(r) else r for r in rates], "requests": 4,
                "max_tokens": 2, "arrivals": "poisson", "dataset": "random", "seed": 0,
                "dataset_params": {"input_len": 8, "output_len": 2, "range_ratio": 0.0},
                "slo_ttft_ms": slo.ttft_ms if slo else None}
    return build_results(settings, {"label": label, "model": "m"}, summaries)


def test_open_loop_levels_are_named_by_their_rate() -> None:
    text = render(open_loop_results("a", 1.0))
    assert "request rate" in text and "2 req/s" in text and "inf" in text
    assert "dataset random (input 8, output 2, range ±0.0)" in text
    assert "goodput" not in text  # no SLO, no goodput column


def test_goodput_is_shown_and_compared() -> None:
    slo = Slo(ttft_ms=500.0)
    text = render(open_loop_results("fast", 2.0, slo=slo), open_loop_results("slow", 1.0, slo=slo))
    assert "goodput req/s" in text and "SLO met" in text
    assert "75%" in text  # 3 of the 4 requests had their first token within 500 ms
    assert "SLO TTFT ≤ 500 ms" in text
    comparison = text[text.index("fast vs slow"):]
    assert comparison.count("goodput req/s") == 2  # one row per shared rate
    assert "2.00×" in comparison


def test_open_loop_json_is_strict_and_round_trips(tmp_path: Path) -> None:
    doc = open_loop_results("a", 1.0)
    assert [level["request_rate"] for level in doc["levels"]] == [2.0, "inf"]
    json.dumps(doc, allow_nan=False)
    write_json(doc, tmp_path / "r.json")
    assert load_results(tmp_path / "r.json") == doc


def test_open_and_closed_runs_share_no_level() -> None:
    text = render(open_loop_results("a", 1.0), results("b", 1.0))
    assert "share no load level" in text
    assert "the runs differ: dataset random vs builtin" in text
    assert "arrivals poisson vs closed-loop" in text


def test_an_older_results_file_is_still_like_for_like() -> None:
    # Written before datasets and open loop: no dataset, arrivals or SLO keys at all.
    mine, old = results("a", 1.0), results("b", 1.0)
    mine["settings"] |= {"dataset": "builtin", "arrivals": "closed-loop", "seed": 0,
                         "max_concurrency": None, "slo_ttft_ms": None, "slo_tpot_ms": None}
    assert "the runs differ" not in render(mine, old)


def test_plot_of_open_loop_runs(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    plot_results(open_loop_results("a", 2.0, (0.5, 2.0, math.inf)), path,
                 open_loop_results("b", 1.0, (0.5, math.inf)))
    assert path.read_bytes().startswith(b"\x89PNG")
