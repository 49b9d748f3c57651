"""insieme before and after a change, through HTTP: two servers from two source trees on the
same bundled model file and flags, measured with `insieme bench` in alternating rounds.

    python benchmarks/before_after.py --before ../wt-before [--after .] [--concurrency 1,4,16]
        [--requests 32] [--rounds 3] [--max-tokens 128] [--threads 2]

Each server runs `python -m insieme serve` with PYTHONPATH set to its tree. Both stay up, but
only one decodes at a time: each round runs a level on one, then on the other (the order
rotating each round), and each server's rounds are pooled as in side_by_side.py. Writes
benchmarks/out/before_after.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import MODEL_NAME, OUT, measure, start  # noqa: E402

from insieme.bench.report import machine_info  # noqa: E402
from insieme.config import bundled_model_path  # noqa: E402

HERE = Path(__file__).resolve().parent


def command(tree: Path, threads: int, slots: int, model_len: int) -> list[str]:
    return ["env", f"PYTHONPATH={tree}", sys.executable, "-m", "insieme", "serve",
            "--port", "{port}", "--model", str(bundled_model_path()),
            "--served-model-name", MODEL_NAME, "--threads", str(threads),
            "--max-num-seqs", str(slots), "--max-model-len", str(model_len),
            "--log-level", "warning"]


def table(results: dict[str, Any], levels: list[int]) -> str:
    """One row per level and metric: before, after, after / before."""
    before, after = list(results)
    lines = [f"| concurrency | metric | {before} | {after} | {after} / {before} |",
             "|---|---|---|---|---|"]
    rows = [("output tok/s", "output_throughput", None), ("TTFT p50 ms", "ttft_ms", "p50"),
            ("TTFT p99 ms", "ttft_ms", "p99"), ("TPOT p50 ms", "tpot_ms", "p50"),
            ("E2E p50 ms", "e2e_ms", "p50"), ("errors", "failed", None)]
    for level in levels:
        entries = [next(x for x in results[name]["levels"] if x["concurrency"] == level)
                   for name in (before, after)]
        for label, key, stat in rows:
            values = [(e[key] or {}).get(stat) if stat else e[key] for e in entries]
            ratio = (f"{values[1] / values[0]:.2f}" if key != "failed" and values[0]
                     and values[1] is not None else "")
            cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in values]
            lines.append(f"| {level} | {label} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the source tree before the change")
    parser.add_argument("--after", default=str(HERE.parent), help="the tree after it")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=32,
                        help="requests per round (at least twice the concurrency)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    commands = {
        "insieme-old": command(Path(args.before).resolve(), args.threads, max(levels),
                               args.max_model_len),
        "insieme-new": command(Path(args.after).resolve(), args.threads, max(levels),
                               args.max_model_len),
    }
    running = {}
    try:
        for name, argv in commands.items():
            running[name] = start(name, argv)
        results = measure(running, levels, args.rounds, args.requests, args.max_tokens)
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait(timeout=30)
    document = {"machine": machine_info(), "threads": args.threads, "max_tokens": args.max_tokens,
                "requests_per_round": args.requests, "rounds": args.rounds,
                "commands": commands, "results": results}
    (OUT / "before_after.json").write_text(json.dumps(document, indent=2))
    markdown = table(results, levels)
    (OUT / "before_after.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
