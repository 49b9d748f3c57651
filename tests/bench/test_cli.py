"""`insieme bench` end to end against an in-process insieme on the fake engine."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from insieme.bench import BenchSettings, run_bench
from insieme.cli import main
from insieme.config import ServerConfig

MODEL = ServerConfig().model_id  # what the fixtures' fake insieme serves
MAX_TOKENS = 6
REQUESTS = 8


def bench(base_url: str, *extra: str) -> list[str]:
    return ["bench", "--base-url", base_url, "--model", MODEL, "--concurrency", "1,4",
            "--requests", str(REQUESTS), "--max-tokens", str(MAX_TOKENS), *extra]


def one_clean_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bench_writes_consistent_json_and_a_plot(
    base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output, plot = tmp_path / "results.json", tmp_path / "results.png"
    assert main(bench(base_url, "--output", str(output), "--plot", str(plot))) == 0
    shown = capsys.readouterr().out
    assert "output tok/s" in shown and "TTFT p50 ms" in shown and "latency (ms)" in shown

    results = json.loads(output.read_text())
    assert datetime.fromisoformat(results["timestamp"]).tzinfo is not None
    assert results["machine"]["cpu_count"] >= 1
    assert results["server"] | {"base_url": base_url, "model": MODEL, "label": "insieme"} \
        == results["server"]
    assert results["settings"]["concurrency"] == [1, 4]
    assert results["settings"]["max_tokens"] == MAX_TOKENS
    assert results["output_tokens_source"] == "usage"
    levels = {level["concurrency"]: level for level in results["levels"]}
    assert set(levels) == {1, 4}
    for level in levels.values():
        assert (level["completed"], level["failed"], level["errors"]) == (REQUESTS, 0, {})
        # The fake's reply is longer than max_tokens: every request stops at the limit.
        assert level["total_output_tokens"] == REQUESTS * MAX_TOKENS
        assert level["request_throughput"] * level["duration_s"] == pytest.approx(REQUESTS)
        assert level["output_throughput"] * level["duration_s"] == \
            pytest.approx(REQUESTS * MAX_TOKENS)
        assert level["itl_ms"]["count"] == REQUESTS * (MAX_TOKENS - 1)
        assert level["ttft_ms"]["count"] == level["tpot_ms"]["count"] == REQUESTS
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            dist = level[key]
            assert 0 < dist["p50"] <= dist["p90"] <= dist["p99"]
        # The fake engine sleeps 5 ms per token. (Means, not medians: a busy machine may
        # deliver two chunks in one read, but cannot make the whole reply faster.)
        assert level["tpot_ms"]["mean"] >= 4.0 and level["itl_ms"]["mean"] >= 4.0
        assert level["e2e_ms"]["mean"] >= level["ttft_ms"]["mean"] + \
            (MAX_TOKENS - 1) * level["tpot_ms"]["mean"] * 0.99
    # Four clients at once get more done per second than one.
    assert levels[4]["request_throughput"] > levels[1]["request_throughput"]

    png = plot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_compare_shows_ratios_and_plots_both(
    base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, plot = tmp_path / "before.json", tmp_path / "both.png"
    quick = ("--concurrency", "2,4", "--requests", "4")
    assert main(bench(base_url, *quick, "--label", "before", "--output", str(before))) == 0
    capsys.readouterr()
    assert main(bench(base_url, *quick, "--label", "after", "--compare", str(before),
                      "--plot", str(plot))) == 0
    shown = capsys.readouterr().out
    assert "after vs before (ratio = after / before)" in shown
    assert "×" in shown
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_run_bench_from_a_script(base_url: str) -> None:
    results = run_bench(BenchSettings(base_url=base_url, model=MODEL, concurrency=(2,),
                                      requests=4, max_tokens=3))
    assert results["levels"][0]["completed"] == 4
    assert results["levels"][0]["total_output_tokens"] == 12


def test_unreachable_server(closed_port_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(bench(closed_port_url)) != 0
    line = one_clean_line(capsys.readouterr().err)
    assert line.startswith(f"insieme: cannot reach {closed_port_url}")


def test_missing_api_key(keyed_base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(bench(keyed_base_url)) != 0
    line = one_clean_line(capsys.readouterr().err)
    assert "needs an API key (HTTP 401" in line and "--api-key" in line


def test_wrong_api_key(keyed_base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(bench(keyed_base_url, "--api-key", "wrong")) != 0
    assert "refused the API key (HTTP 401" in one_clean_line(capsys.readouterr().err)


def test_api_key_from_the_environment(
    keyed_base_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "k")
    assert main(bench(keyed_base_url, "--concurrency", "2", "--requests", "2")) == 0


def test_unknown_model(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*bench(base_url), "--model", "no-such-model"]) != 0
    line = one_clean_line(capsys.readouterr().err)
    assert f"does not serve the model 'no-such-model'; it serves: {MODEL}" in line


@pytest.mark.parametrize(("flags", "message"), [
    (["--output", "/no/such/folder/r.json"], "--output: the folder"),
    (["--compare", "/no/such/file.json"], "--compare: cannot read"),
    (["--requests", "2"], "--requests (2) must be at least"),
])
def test_bad_flags_fail_before_any_request(
    closed_port_url: str, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Against a closed port: a check that ran late would say "cannot reach" instead.
    assert main([*bench(closed_port_url), *flags]) != 0
    assert message in one_clean_line(capsys.readouterr().err)


def open_bench(base_url: str, *extra: str) -> list[str]:
    """An open-loop run: no --concurrency."""
    return ["bench", "--base-url", base_url, "--model", MODEL, "--requests", str(REQUESTS),
            "--max-tokens", str(MAX_TOKENS), *extra]


def test_open_loop_random_dataset_with_goodput(
    base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "open.json"
    assert main(open_bench(base_url, "--request-rate", "40,inf", "--max-concurrency", "4",
                           "--dataset", "random", "--random-input-len", "12",
                           "--random-output-len", "4", "--random-range-ratio", "0.5",
                           "--seed", "9", "--slo-ttft", "5000", "--slo-tpot", "0.001",
                           "--output", str(output))) == 0
    shown = capsys.readouterr().out
    assert "request rate" in shown and "40 req/s (max 4)" in shown and "inf (max 4)" in shown
    assert "goodput: requests that met TTFT ≤ 5000 ms, TPOT ≤ 0.001 ms" in shown
    assert "goodput req/s" in shown
    results = json.loads(output.read_text())
    settings = results["settings"]
    assert settings["request_rate"] == [40.0, "inf"] and settings["concurrency"] is None
    assert (settings["max_concurrency"], settings["seed"], settings["dataset"]) == (4, 9, "random")
    assert settings["dataset_params"] == {"input_len": 12, "output_len": 4, "range_ratio": 0.5}
    assert (settings["slo_ttft_ms"], settings["slo_tpot_ms"]) == (5000.0, 0.001)
    for level in results["levels"]:
        assert level["completed"] == REQUESTS
        # Nothing streams a token in a microsecond: no request met the TPOT SLO.
        assert (level["slo_met"], level["goodput"], level["slo_attainment"]) == (0, 0.0, 0.0)
        # The fake engine's reply is longer than any drawn length: each stops at its own.
        assert 2 * REQUESTS <= level["total_output_tokens"] <= 6 * REQUESTS


def test_multi_turn_and_grounded_datasets_run(
    base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(bench(base_url, "--concurrency", "2", "--dataset", "multi-turn",
                      "--turns", "2")) == 0
    assert "dataset multi-turn (4 × 2 turns)" in capsys.readouterr().out
    assert main(bench(base_url, "--concurrency", "2", "--dataset", "multi-turn", "--turns",
                      "2", "--context-words", "20", "--no-system-prompt")) == 0
    assert ("dataset multi-turn (4 × 2 turns, 20-word documents, no system prompt)"
            in capsys.readouterr().out)
    assert main(bench(base_url, "--concurrency", "2", "--dataset", "grounded")) == 0
    assert "dataset grounded" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "message"), [
    (["--request-rate", "0"], "--request-rate needs one or more rates"),
    (["--request-rate", "2,-1"], "each more than 0"),
    (["--request-rate", "2", "--concurrency", "4"], "two ways to load the server"),
    (["--max-concurrency", "2"], "--max-concurrency caps the open loop"),
    (["--request-rate", "2", "--max-concurrency", "0"], "--max-concurrency must be at least 1"),
    (["--dataset", "random", "--random-range-ratio", "1"], "--random-range-ratio must be"),
    (["--dataset", "random", "--random-range-ratio", "-0.5"], "--random-range-ratio must be"),
    (["--random-input-len", "64"], "--random-input-len applies to --dataset random"),
    (["--turns", "3"], "--turns applies to --dataset multi-turn, not builtin"),
    (["--no-system-prompt"], "--no-system-prompt applies to --dataset multi-turn"),
    (["--dataset", "multi-turn", "--turns", "3"], "must be a multiple of --turns (3)"),
    (["--dataset", "jsonl"], "--dataset jsonl needs --prompts"),
    (["--slo-ttft", "0"], "--slo-ttft must be a positive number"),
    (["--slo-tpot", "-3"], "--slo-tpot must be a positive number"),
])
def test_bad_load_dataset_and_slo_flags_fail_before_any_request(
    closed_port_url: str, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 16 requests: enough for the default closed loop (1,4,16) where no rate is given.
    assert main([*open_bench(closed_port_url), "--requests", "16", *flags]) != 0
    assert message in one_clean_line(capsys.readouterr().err)


def test_prompts_go_with_the_jsonl_dataset_only(
    closed_port_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    assert main([*bench(closed_port_url), "--prompts", str(path), "--dataset", "random"]) != 0
    assert "--prompts is the jsonl dataset" in one_clean_line(capsys.readouterr().err)


def test_a_rate_that_is_not_a_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(open_bench("http://127.0.0.1:1/v1", "--request-rate", "fast"))
    assert exit_info.value.code == 2
    assert "expected requests per second like 0.5,2,inf, not 'fast'" in capsys.readouterr().err
