"""Model-switch latency: a streamed request for a model that is not loaded, from sending it to
its first token, on one `insieme serve` with two models and --max-loaded-models 1 (so every
switch unloads one model and loads the other). Beside it, in alternating rounds: the same
request to the model already loaded (the warm baseline) and a whole new `insieme serve` from
process start to first token (what switching costs without a registry).

    python benchmarks/model_switch.py [--rounds 10] [--threads 2]

Both models are the bundled GGUF under two names (the file is then in the page cache, as a
model used recently is). Writes benchmarks/out/model_switch.json.
"""

from __future__ import annotations

import argparse
import json
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
from soak import wait_healthy  # noqa: E402

from insieme.bench.report import machine_info  # noqa: E402
from insieme.config import bundled_model_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PROMPT = [{"role": "user", "content": "Say hello."}]


def start(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "insieme", "serve", "--port", str(port),
                                "--no-usage-db", "--log-level", "warning",
                                "--no-prefix-caching", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def first_token_seconds(root: str, model: str) -> float:
    """Send a streamed chat; seconds until its first content token arrives."""
    started = time.perf_counter()
    with httpx.stream("POST", f"{root}/v1/chat/completions", timeout=120,
                      json={"model": model, "messages": PROMPT, "max_tokens": 8,
                            "temperature": 0, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("error"):
                    raise RuntimeError(chunk["error"])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    elapsed = time.perf_counter() - started
                    break
        else:
            raise RuntimeError("no token")
        for _ in response.iter_lines():  # read it to its end
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
    options = parser.parse_args()
    config = Path(tempfile.mkdtemp()) / "insieme.toml"
    config.write_text("max-loaded-models = 1\nmax-model-len = 1024\n"
                      "[models.a]\nserved-model-name = 'smol-a'\n"
                      "[models.b]\nserved-model-name = 'smol-b'\n")
    switch: list[float] = []
    warm: list[float] = []
    cold: list[float] = []
    process, root = start(["--config", str(config), "--threads", str(options.threads)])
    try:
        wait_healthy(root, process)
        first_token_seconds(root, "smol-a")  # a is loaded and warm
        for i in range(options.rounds):
            target = ("smol-b", "smol-a")[i % 2]
            switch.append(first_token_seconds(root, target))  # unloads one, loads the other
            warm.append(first_token_seconds(root, target))
            if i < max(3, options.rounds // 3):  # fewer: each costs a whole process
                cold.append(cold_start_seconds(options.threads))
            print(f"round {i + 1}: switch {1000 * switch[-1]:.0f} ms, warm "
                  f"{1000 * warm[-1]:.0f} ms" + (f", cold start {1000 * cold[-1]:.0f} ms"
                                                   if len(cold) == i + 1 else ""), flush=True)
        loads = httpx.get(f"{root}/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=30)
    result: dict[str, Any] = {
        "machine": machine_info(), "model": str(bundled_model_path()),
        "threads": options.threads, "switch": summary(switch), "warm": summary(warm),
        "cold_start": summary(cold),
        "loads": [line for line in loads.splitlines() if line.startswith("insieme:model_loads")],
    }
    result["switch_over_cold_start"] = (result["switch"]["median_ms"]
                                        / result["cold_start"]["median_ms"])
    OUT.mkdir(exist_ok=True)
    (OUT / "model_switch.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
