"""Speculative decoding side by side: insieme with prompt-lookup drafts, insieme without,
llama-server without speculation and llama-server with its n-gram speculation, on the same
bundled model file and threads, in alternating rounds (never two servers decoding at once).

    python benchmarks/speculative.py [--rounds 2] [--threads 2] [--only grounded,free,open]
        [--llama-spec "--spec-type ngram-simple --spec-draft-n-max 16"]

Workloads (``insieme bench`` datasets): input-grounded tasks at concurrency 1 (all four
servers); free-form prompts at concurrency 1 and 16 (insieme with and without drafts); the
random dataset in an open loop at three request rates (insieme and llama-server), with
goodput under TTFT/TPOT SLOs. Needs
benchmarks/build_llama_server.sh. Writes benchmarks/out/speculative.json and .md, and the
engine's draft counters (from /metrics) per workload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import MODEL_NAME, OUT, server_commands, start  # noqa: E402

from insieme.bench import BenchSettings  # noqa: E402
from insieme.bench.metrics import RequestRecord, Slo, summarize  # noqa: E402
from insieme.bench.report import machine_info  # noqa: E402
from insieme.bench.runner import run_level_records  # noqa: E402
from insieme.bench.settings import Level  # noqa: E402
from insieme.config import bundled_model_path  # noqa: E402

# llama-server's n-gram speculation that did best here (see BENCHMARKS.md for the search).
LLAMA_SPEC = "--spec-type ngram-simple --spec-draft-n-max 16"
# Within reach of a 2-core machine with several requests running (TPOT p50 ~140 ms at 16).
SLO = Slo(ttft_ms=2000.0, tpot_ms=200.0)
RATES = (0.5, 1.0, 2.0)


def commands(threads: int, llama_spec: str) -> dict[str, list[str]]:
    base = server_commands(str(bundled_model_path()), threads, 16, 2048)
    return {
        "insieme": [*base["insieme"], "--speculative", "ngram"],
        "insieme-nospec": [*base["insieme"], "--speculative", "off"],
        "llama-server": base["llama-server"],
        "llama-server-spec": [*base["llama-server"], *shlex.split(llama_spec)],
    }


def spec_counters(url: str) -> dict[str, float]:
    """insieme's draft counters, from /metrics (empty for other servers)."""
    try:
        text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    found = {}
    for name in ("drafts", "draft_tokens", "accepted_tokens"):
        match = re.search(rf"^insieme:spec_decode_num_{name}_total\{{[^}}]*\}} (\S+)$", text,
                          re.MULTILINE)
        if match:
            found[name] = float(match.group(1))
    return found


def measure(running: dict[str, tuple[Any, str]], names: list[str], settings: dict[str, Any],
            level: Level, rounds: int) -> dict[str, Any]:
    """One workload at one level on each named server, in alternating rounds, pooled."""
    pooled: dict[str, tuple[list[RequestRecord], float]] = {n: ([], 0.0) for n in names}
    counters: dict[str, dict[str, float]] = {}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            url = running[name][1]
            before = spec_counters(url)
            load = ({"concurrency": (level.concurrency,)} if level.request_rate is None
                    else {"request_rate": (level.request_rate,)})
            bench = BenchSettings(base_url=url, model=MODEL_NAME, label=name, **load,
                                  **settings)
            records, seconds = asyncio.run(run_level_records(bench, level))
            after = spec_counters(url)
            for key, value in after.items():
                counters.setdefault(name, {}).setdefault(key, 0.0)
                counters[name][key] += value - before.get(key, 0.0)
            done = [r for r in records if r.ok]
            print(f"{settings.get('dataset', 'builtin'):<9} {level.name:<16} "
                  f"round {round_index + 1}/{rounds} {name:<18} "
                  f"{sum(r.output_len for r in done) / seconds:7.1f} tok/s "
                  f"({len(records) - len(done)} failed)", flush=True)
            kept, total = pooled[name]
            pooled[name] = (kept + records, total + seconds)
    out = {}
    for name in names:
        records, seconds = pooled[name]
        metrics = asdict(summarize(records, concurrency=level.concurrency, duration_s=seconds,
                                   request_rate=level.request_rate, slo=SLO))
        if name in counters and counters[name].get("draft_tokens"):
            c = counters[name]
            metrics["spec"] = {**c, "acceptance": c["accepted_tokens"] / c["draft_tokens"]}
        out[name] = metrics
    return out


def rows(title: str, result: dict[str, Any], versus: list[tuple[str, str]]) -> list[str]:
    names = list(result)
    lines = [f"**{title}**", "",
             "| metric | " + " | ".join(names) + " | " +
             " | ".join(f"{a} / {b}" for a, b in versus) + " |",
             "|---|" + "---|" * (len(names) + len(versus))]
    metrics = [("output tok/s", "output_throughput", None), ("TTFT p50 ms", "ttft_ms", "p50"),
               ("TTFT p99 ms", "ttft_ms", "p99"), ("TPOT p50 ms", "tpot_ms", "p50"),
               ("TPOT p99 ms", "tpot_ms", "p99"), ("goodput req/s", "goodput", None)]
    for label, key, stat in metrics:
        values = {}
        for name in names:
            value = result[name].get(key)
            values[name] = (value or {}).get(stat) if stat else value
        cells = [f"{values[n]:.2f}" if isinstance(values[n], float) else str(values[n])
                 for n in names]
        ratios = [f"{values[a] / values[b]:.2f}" if values.get(a) and values.get(b) else ""
                  for a, b in versus]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    accept = [f"{n}: {result[n]['spec']['acceptance']:.0%} of "
              f"{result[n]['spec']['draft_tokens']:.0f} drafted tokens kept"
              for n in names if "spec" in result[n]]
    if accept:
        lines += ["", "Acceptance — " + "; ".join(accept)]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--open-rounds", type=int, default=1)
    parser.add_argument("--only", default="grounded,free,open")
    parser.add_argument("--llama-spec", default=LLAMA_SPEC)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    OUT.mkdir(exist_ok=True)
    cmds = commands(args.threads, args.llama_spec)
    running = {name: start(name, cmd) for name, cmd in cmds.items()}
    results: dict[str, Any] = {"machine": machine_info(), "llama_spec": args.llama_spec,
                               "threads": args.threads, "slo": asdict(SLO)}
    md = [f"llama-server-spec: `{args.llama_spec}`; SLO: TTFT ≤ {SLO.ttft_ms:g} ms, "
          f"TPOT ≤ {SLO.tpot_ms:g} ms", ""]
    everyone = list(cmds)
    try:
        if "grounded" in parts:
            r = measure(running, everyone, {"dataset": "grounded", "requests": args.requests},
                        Level(concurrency=1), args.rounds)
            results["grounded_c1"] = r
            md += rows("Input-grounded tasks, concurrency 1", r,
                       [("insieme", "llama-server"), ("insieme", "llama-server-spec"),
                        ("insieme", "insieme-nospec")])
        if "free" in parts:
            for c in (1, 16):
                r = measure(running, ["insieme", "insieme-nospec"],
                            {"dataset": "builtin", "requests": max(args.requests, 2 * c),
                             "max_tokens": 128, "ignore_eos": True},
                            Level(concurrency=c), args.rounds)
                results[f"free_c{c}"] = r
                md += rows(f"Free-form prompts, concurrency {c}", r,
                           [("insieme", "insieme-nospec")])
        if "open" in parts:
            for rate in RATES:
                r = measure(running, ["insieme", "llama-server"],
                            {"dataset": "random", "requests": 2 * args.requests,
                             "random_input_len": 256, "random_output_len": 128,
                             "random_range_ratio": 0.5},
                            Level(request_rate=rate), args.open_rounds)
                results[f"random_rate_{rate:g}"] = r
                md += rows(f"Random dataset (256 in / 128 out, ±50%), open loop at {rate:g} "
                           "req/s", r, [("insieme", "llama-server")])
    finally:
        for process, _ in running.values():
            process.terminate()
        for process, _ in running.values():
            process.wait(timeout=30)
    (OUT / "speculative.json").write_text(json.dumps(results, indent=2))
    (OUT / "speculative.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
