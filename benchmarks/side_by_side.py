"""insieme beside llama.cpp's llama-server and llama-cpp-python's server, in one run, on the
same bundled model file and thread count, measured with `insieme bench`.

    python benchmarks/side_by_side.py [--concurrency 1,4,16] [--requests 16] [--rounds 3]

Needs benchmarks/build_llama_server.sh (llama-server from the sources vendored in the pinned
llama-cpp-python sdist) and a venv with `llama-cpp-python[server]` at benchmarks/out/lcp-venv
(`--setup` makes it). This machine's speed drifts by ±10% over minutes, so each level runs in
several short rounds that alternate between the servers (the order rotating each round), and
each server's rounds are pooled: throughput is its tokens over its summed wall time,
percentiles are over all its requests. Writes benchmarks/out/side_by_side.json, .md and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from insieme.bench import BenchSettings
from insieme.bench.metrics import RequestRecord, summarize
from insieme.bench.report import machine_info
from insieme.bench.runner import run_level_records
from insieme.config import bundled_model_path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
MODEL_NAME = "smollm2"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_commands(model: str, threads: int, slots: int, ctx_per_slot: int) -> dict[str, list]:
    """Each server's command; {port} is filled in at start."""
    llama_server = OUT / "llama.cpp" / "build" / "bin" / "llama-server"
    return {
        "insieme": [sys.executable, "-m", "insieme", "serve", "--port", "{port}",
                    "--model", model, "--served-model-name", MODEL_NAME,
                    "--threads", str(threads), "--max-num-seqs", str(slots),
                    "--max-model-len", str(ctx_per_slot), "--log-level", "warning"],
        # llama-server's fastest flags here: one slot per client (-np), continuous batching
        # (on by default), each slot its own KV stream (default without -kvu), a batch as
        # large as the whole burst of prompts, prompt caching per slot (default).
        "llama-server": [str(llama_server), "--port", "{port}", "-m", model,
                         "-a", MODEL_NAME, "-t", str(threads), "-tb", str(threads),
                         "-np", str(slots), "-c", str(slots * ctx_per_slot),
                         "-b", "2048", "-ub", "512", "--no-webui"],
        "llama-cpp-python": [str(OUT / "lcp-venv" / "bin" / "python"), "-m",
                             "llama_cpp.server", "--model", model, "--model_alias", MODEL_NAME,
                             "--n_threads", str(threads), "--n_threads_batch", str(threads),
                             "--n_ctx", str(ctx_per_slot), "--port", "{port}",
                             # By default a new request cuts off the stream in progress
                             # (31 of 32 requests failed at concurrency 4); queue instead.
                             "--interrupt_requests", "False"],
    }


def setup() -> None:
    subprocess.run([str(HERE / "build_llama_server.sh")], check=True)
    venv = OUT / "lcp-venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    flags = f"-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='{NO_AMX}' -DCMAKE_CXX_FLAGS='{NO_AMX}'"
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                    "llama-cpp-python[server]==0.3.36"],
                   check=True, env={**os.environ, "CMAKE_ARGS": flags})


def start(name: str, command: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in command]
    log = open(OUT / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited; see {OUT / (name + '.log')}")
        try:
            # /health answers 503 while the model loads (insieme, llama-server); the Python
            # server has no /health but only listens once its model is loaded.
            health = httpx.get(f"{base}/health", timeout=2).status_code
            if health == 200 or (health == 404 and httpx.get(
                    f"{base}/v1/models", timeout=2).status_code == 200):
                return process, f"{base}/v1"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{name} did not start")


def table(results: dict[str, Any], levels: list[int], peer: str) -> str:
    names = list(results)
    lines = ["| concurrency | metric | " + " | ".join(names) + f" | insieme / {peer} |",
             "|---|---|" + "---|" * (len(names) + 1)]
    rows = [("output tok/s", "output_throughput", None), ("TTFT p50 ms", "ttft_ms", "p50"),
            ("TTFT p99 ms", "ttft_ms", "p99"), ("TPOT p50 ms", "tpot_ms", "p50"),
            ("E2E p50 ms", "e2e_ms", "p50"), ("errors", "errors", None)]
    for level in levels:
        for label, key, stat in rows:
            values = []
            for name in names:
                entry = next(x for x in results[name]["levels"] if x["concurrency"] == level)
                value = entry[key]
                if stat:
                    value = (value or {}).get(stat)
                if key == "errors":
                    value = sum(value.values()) if isinstance(value, dict) else value
                values.append(value)
            ours, theirs = values[0], values[names.index(peer)] if peer in names else None
            ratio = (f"{ours / theirs:.2f}" if isinstance(ours, (int, float)) and theirs
                     and key != "errors" else "")
            cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in values]
            lines.append(f"| {level} | {label} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], levels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, run in results.items():
        by_level = {x["concurrency"]: x for x in run["levels"]}
        left.plot(levels, [by_level[c]["output_throughput"] for c in levels], marker="o",
                  label=name)
        right.plot(levels, [(by_level[c]["ttft_ms"] or {}).get("p99") for c in levels],
                   marker="o", label=f"{name} p99")
        right.plot(levels, [(by_level[c]["ttft_ms"] or {}).get("p50") for c in levels],
                   marker=".", linestyle="--", label=f"{name} p50")
    left.set(title="Output tokens/s (higher is better)", xlabel="concurrent clients",
             xscale="log", xticks=levels, xticklabels=[str(c) for c in levels])
    right.set(title="Time to first token, ms (lower is better)", xlabel="concurrent clients",
              xscale="log", yscale="log", xticks=levels, xticklabels=[str(c) for c in levels])
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure(running: dict[str, tuple[Any, str]], levels: list[int], rounds: int,
            requests: int, max_tokens: int) -> dict[str, Any]:
    """Every level on every server, in alternating rounds; each server's rounds pooled."""
    names = list(running)
    results: dict[str, Any] = {name: {"label": name, "levels": []} for name in names}
    for level in levels:
        pooled: dict[str, tuple[list[RequestRecord], float]] = {n: ([], 0.0) for n in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                settings = BenchSettings(
                    base_url=running[name][1], model=MODEL_NAME, concurrency=(level,),
                    requests=max(requests, 2 * level), max_tokens=max_tokens,
                    temperature=0.0, ignore_eos=True, label=name)
                records, seconds = asyncio.run(run_level_records(settings, level))
                done = [r for r in records if r.ok]
                print(f"c={level:<3} round {round_index + 1}/{rounds} {name:<17} "
                      f"{sum(r.output_len for r in done) / seconds:7.1f} tok/s "
                      f"({len(records) - len(done)} failed)", flush=True)
                kept, total = pooled[name]
                pooled[name] = (kept + records, total + seconds)
        for name in names:
            records, seconds = pooled[name]
            metrics = summarize(records, concurrency=level, duration_s=seconds)
            results[name]["levels"].append(asdict(metrics))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=16,
                        help="requests per round (at least twice the concurrency)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--servers", default="insieme,llama-server,llama-cpp-python")
    parser.add_argument("--setup", action="store_true", help="build/install the peers first")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.setup:
        setup()
    levels = [int(c) for c in args.concurrency.split(",")]
    model = str(bundled_model_path())
    commands = server_commands(model, args.threads, max(levels), 1024)
    names = args.servers.split(",")
    running = {name: start(name, commands[name]) for name in names}
    try:
        results = measure(running, levels, args.rounds, args.requests, args.max_tokens)
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait(timeout=30)
    document = {"machine": machine_info(), "threads": args.threads, "max_tokens": args.max_tokens,
                "requests_per_round": args.requests, "rounds": args.rounds,
                "commands": commands, "results": results}
    (OUT / "side_by_side.json").write_text(json.dumps(document, indent=2))
    peer = "llama-server" if "llama-server" in names else names[-1]
    markdown = table(results, levels, peer)
    (OUT / "side_by_side.md").write_text(markdown + "\n")
    plot(results, levels, OUT / "side_by_side.png")
    print(markdown)


if __name__ == "__main__":
    main()
