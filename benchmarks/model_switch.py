"""Model-switch latency: a streamed request for a model that is not loaded, from sending it to
its first token, on one `insieme serve` with two models and --max-loaded-models 1 (so every
switch unloads one model and loads the other), and on llama-server's router mode with the
same two files and --models-max 1 (each model a child process it starts and stops). Beside
them, in the same rounds: the same request to the model just loaded (the warm baseline) and a
whole new `insieme serve` from process start to first token (switching without a registry).

    python benchmarks/model_switch.py [--rounds 10] [--threads 2] [--llama-server PATH]

Both models are the bundled GGUF under two names (the file is then in the page cache, as a
model used recently is). Writes benchmarks/out/model_switch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import free_port  # noqa: E402

from insieme.bench.report import machine_info  # noqa: E402
from insieme.config import bundled_model_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PROMPT = [{"role": "user", "content": "Say hello."}]


def start(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "insieme", "serve", "--port", str(port),
                                "--no-usage-db", "--log-level", "warning",
                                "--no-prefix-caching", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def first_token_seconds(root: str, model: str) -> float:
    """Send a streamed chat; seconds until its first content token arrives."""
    started = time.perf_counter()
    with httpx.stream("POST", f"{root}/v1/chat/completions", timeout=120,
                      json={"model": model, "messages": PROMPT, "max_tokens": 8,
                            "temperature": 0, "stream": True}) as response:
        response.raise_for_status()
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("error"):
                    raise RuntimeError(chunk["error"])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    elapsed = time.perf_counter() - started
                    break
        else:
            raise RuntimeError("no token")
        for _ in lines:  # read it to its end
            pass
    return elapsed


def cold_start_seconds(threads: int) -> float:
    """A new server for the model: process start to the first token of its first request."""
    started = time.perf_counter()
    process, root = start(["--threads", str(threads), "--max-model-len", "1024"])
    try:
        while True:  # asked as soon as it listens (a 503 while it loads: ask again)
            try:
                first_token_seconds(root, "HuggingFaceTB/SmolLM2-135M-Instruct")
                return time.perf_counter() - started
            except (httpx.TransportError, httpx.HTTPStatusError):
                if process.poll() is not None or time.perf_counter() - started > 120:
                    raise
                time.sleep(0.01)
    finally:
        process.terminate()
        process.wait(timeout=30)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "median_ms": 1000 * statistics.median(ordered),
            "p90_ms": 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "min_ms": 1000 * ordered[0], "max_ms": 1000 * ordered[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-server", default=None, metavar="PATH",
                        help="a llama-server binary (benchmarks/build_llama_server.sh)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    (work / "insieme.toml").write_text("max-loaded-models = 1\nmax-model-len = 1024\n"
                                       "[models.a]\nserved-model-name = 'smol-a'\n"
                                       "[models.b]\nserved-model-name = 'smol-b'\n")
    servers = {"insieme": start(["--config", str(work / "insieme.toml"),
                                 "--threads", str(options.threads)])}
    if options.llama_server:
        servers["llama-server"] = start_router(options.llama_server, work, options.threads)
    switch: dict[str, list[float]] = {name: [] for name in servers}
    warm: dict[str, list[float]] = {name: [] for name in servers}
    cold: list[float] = []
    try:
        pairs = {name: ready(name, process, root) for name, (process, root) in servers.items()}
        for i in range(options.rounds):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for name in order:
                root, target = servers[name][1], pairs[name][(i + 1) % 2]
                switch[name].append(first_token_seconds(root, target))  # out one, in one
                warm[name].append(first_token_seconds(root, target))
            if i < max(3, options.rounds // 3):  # fewer: each costs a whole process
                cold.append(cold_start_seconds(options.threads))
            print(f"round {i + 1}: " + ", ".join(
                f"{name} switch {1000 * switch[name][-1]:.0f} ms warm "
                f"{1000 * warm[name][-1]:.0f} ms" for name in servers), flush=True)
        loads = httpx.get(f"{servers['insieme'][1]}/metrics").text
    finally:
        for process, _ in servers.values():
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    result: dict[str, Any] = {
        "machine": machine_info(), "model": str(bundled_model_path()),
        "threads": options.threads, "rounds": options.rounds,
        "switch": {name: summary(v) for name, v in switch.items()},
        "warm": {name: summary(v) for name, v in warm.items()},
        "insieme_cold_start": summary(cold),
        "insieme_loads": [line for line in loads.splitlines()
                          if line.startswith("insieme:model_loads_total")],
    }
    if "llama-server" in servers:
        result["switch_insieme_over_llama_server"] = (
            result["switch"]["insieme"]["median_ms"]
            / result["switch"]["llama-server"]["median_ms"])
    result["switch_over_cold_start"] = (result["switch"]["insieme"]["median_ms"]
                                        / result["insieme_cold_start"]["median_ms"])
    OUT.mkdir(exist_ok=True)
    (OUT / "model_switch.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


def start_router(binary: str, work: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """llama-server's router mode over a folder holding the model file twice (as a.gguf and
    b.gguf), one model loaded at a time, each with insieme's 16 x 1024 KV cells."""
    models = work / "models"
    models.mkdir()
    for name in ("a", "b"):
        (models / f"{name}.gguf").symlink_to(bundled_model_path())
    port = free_port()
    process = subprocess.Popen(
        [binary, "--models-dir", str(models), "--models-max", "1", "--port", str(port),
         "-np", "16", "-c", "16384", "-t", str(threads), "-tb", str(threads), "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def ready(name: str, process: subprocess.Popen[bytes], root: str) -> tuple[str, str]:
    """Wait for a server to answer; its two model ids, the first one loaded and warm."""
    deadline = time.monotonic() + 120
    while True:
        try:
            listed = httpx.get(f"{root}/v1/models", timeout=2).json()
            ids = sorted(m["id"] for m in listed["data"])
            break
        except (httpx.HTTPError, KeyError, ValueError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start") from None
            time.sleep(0.1)
    pair = (ids[0], ids[-1]) if name != "insieme" else ("smol-a", "smol-b")
    first_token_seconds(root, pair[0])
    return pair


if __name__ == "__main__":
    raise SystemExit(main())
