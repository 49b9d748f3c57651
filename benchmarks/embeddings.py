"""Embeddings throughput, insieme beside llama-server's `--embedding`, on the same GGUF.

    python benchmarks/embeddings.py [--batches 1,16,64] [--rounds 3] [--seconds 8]

One client, closed loop: each request embeds ``batch`` short sentences (about 12 tokens
each), the next goes out when the last is answered. Each batch size runs in short rounds
that alternate between the servers (the order rotating each round); a server's inputs/s
is its inputs over its summed wall time. Both servers mean-pool the bundled chat model
(it declares no pooling), normalise, and may put up to 64 inputs / 512 tokens in one
decode (insieme's pooling context for a chat model). Needs
benchmarks/build_llama_server.sh; without its binary insieme runs alone. Writes
benchmarks/out/embeddings.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from insieme.bench.report import machine_info
from insieme.config import bundled_model_path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))
from side_by_side import free_port  # noqa: E402

NAME = "smollm2"
SUBJECTS = ["The cat", "A tired engineer", "The old lighthouse", "My neighbour's dog",
            "The city council", "A small robot", "The river", "Our team"]
ACTIONS = ["watched the rain fall over the quiet harbour", "finished the report before noon",
           "forgot where the keys were left", "sang loudly during the long drive home",
           "planted tomatoes along the garden fence", "fixed the broken bicycle chain"]


def sentences(n: int, offset: int) -> list[str]:
    return [f"{SUBJECTS[(offset + i) % len(SUBJECTS)]} "
            f"{ACTIONS[(offset + i) // len(SUBJECTS) % len(ACTIONS)]} (#{offset + i})."
            for i in range(n)]


def commands(model: str, threads: int) -> dict[str, list[str]]:
    binary = OUT / "llama.cpp" / "build" / "bin" / "llama-server"
    found = {
        "insieme": [sys.executable, "-m", "insieme", "serve", "--port", "{port}",
                    "--model", model, "--served-model-name", NAME, "--threads", str(threads),
                    "--max-model-len", "2048", "--max-num-seqs", "1",
                    "--log-level", "warning"],
    }
    if binary.exists():
        # One slot per input of the largest batch in one shared KV pool, up to 64 inputs
        # and 512 tokens a decode, as insieme's pooling context for a chat model.
        found["llama-server"] = [str(binary), "--port", "{port}", "-m", model, "-a", NAME,
                                 "--embedding", "--pooling", "mean", "-t", str(threads),
                                 "-tb", str(threads), "-np", "64", "-kvu", "-c", "2048",
                                 "-b", "512", "-ub", "512", "--no-webui"]
    return found


def start(command: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([part.replace("{port}", str(port)) for part in command],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                return process, root
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{command[0]} did not start")


def run_round(client: httpx.Client, root: str, batch: int, seconds: float,
              offset: int) -> tuple[int, float]:
    """Inputs embedded and wall seconds, requests back to back for about ``seconds``."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        inputs = sentences(batch, offset + done)
        response = client.post(f"{root}/v1/embeddings", json={"model": NAME, "input": inputs})
        response.raise_for_status()
        assert len(response.json()["data"]) == batch
        done += batch
    return done, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    model = str(bundled_model_path())
    servers = {name: start(command) for name, command in commands(model, args.threads).items()}
    totals: dict[str, dict[int, list[float]]] = {n: {b: [0, 0.0] for b in batches}
                                                 for n in servers}
    try:
        with httpx.Client(timeout=300) as client:
            for _, root in servers.values():  # warm up: the pooling context, caches
                run_round(client, root, 4, 1.0, 0)
            names = list(servers)
            for batch in batches:
                for r in range(args.rounds):
                    for name in names[r % len(names):] + names[: r % len(names)]:
                        done, wall = run_round(client, servers[name][1], batch, args.seconds,
                                               r * 1000)
                        totals[name][batch][0] += done
                        totals[name][batch][1] += wall
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    rates = {name: {b: done / wall for b, (done, wall) in per.items()}
             for name, per in totals.items()}
    report = {"machine": machine_info(), "rounds": args.rounds, "seconds": args.seconds,
              "threads": args.threads, "inputs_per_second": rates,
              "commands": commands(model, args.threads)}
    OUT.mkdir(exist_ok=True)
    (OUT / "embeddings.json").write_text(json.dumps(report, indent=2))
    print("| inputs a request | insieme inputs/s | llama-server inputs/s | ratio |")
    print("|---|---|---|---|")
    for b in batches:
        ours = rates["insieme"][b]
        peer = rates.get("llama-server", {}).get(b)
        print(f"| {b} | {ours:.1f} | {f'{peer:.1f}' if peer else '-'} | "
              f"{f'{ours / peer:.2f}' if peer else '-'} |")


if __name__ == "__main__":
    main()
