"""Engine replicas on a Ray cluster (issue 16), measured with `insieme bench`, in one run per
part, alternating rounds between the servers compared.

    flock -x /tmp/insieme-cpu.lock python benchmarks/ray_replicas.py --part scale
    flock -x /tmp/insieme-cpu.lock python benchmarks/ray_replicas.py --part affinity
    flock -x /tmp/insieme-cpu.lock python benchmarks/ray_replicas.py --part failover

Each part starts a two-node Ray cluster on this machine (127.0.0.2 and 127.0.0.3, as the
tests do; 3 logical CPUs a node, so the servers compared can all stay up while one of them is
measured) and the servers it compares, every engine with one thread:

- scale: ``direct`` (insieme serve, no Ray), ``ray-1`` (one replica) and ``ray-2`` (two
  replicas, one per node), closed loop at concurrency 16 (output tok/s, TTFT), and direct
  against ray-1 at concurrency 1 (TTFT without queueing);
- affinity: two replicas with the prefix router against two with round robin, on the
  multi-turn dataset (conversations sharing a system prompt, with and without a document of
  their own), cached prompt tokens;
- failover: non-streamed requests at concurrency 16 on two replicas, one replica's process
  killed under load: requests lost.

Writes benchmarks/out/ray_<part>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from insieme.bench import BenchSettings  # noqa: E402
from insieme.bench.metrics import RequestRecord, summarize  # noqa: E402
from insieme.bench.runner import run_level_records  # noqa: E402
from tests.conftest import free_port, wait_healthy  # noqa: E402
from tests.engine.ray.cluster import LocalCluster  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
MODEL = "smollm2"
COMMON = ["--threads", "1", "--max-num-seqs", "16", "--max-model-len", "1024",
          "--served-model-name", MODEL, "--no-usage-db", "--log-level", "warning"]


def start(name: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(OUT / f"ray_{name}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "insieme", "serve", "--port", str(port),
                                *COMMON, *extra], stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    wait_healthy(root, timeout=300, process=process)
    return process, root


def ray_server(cluster: LocalCluster, name: str, replicas: int, *extra: str) -> list[str]:
    return ["--ray-address", cluster.address, "--ray-app-name", name, "--replicas",
            str(replicas), "--max-replicas-per-node", "1", *extra]


def measure(servers: dict[str, str], rounds: int, **settings: Any) -> dict[str, Any]:
    """Each server in turn, ``rounds`` times (the order rotating); each server's rounds pooled.
    A ``seed`` differing per round keeps a later round from finding the earlier one's
    conversations in a cache."""
    names = list(servers)
    pooled: dict[str, tuple[list[RequestRecord], float]] = {n: ([], 0.0) for n in names}
    level = settings.pop("concurrency")
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            bench = BenchSettings(base_url=f"{servers[name]}/v1", model=MODEL,
                                  concurrency=(level,), temperature=0.0, label=name,
                                  seed=index, **settings)
            records, seconds = asyncio.run(run_level_records(bench, level))
            done = [r for r in records if r.ok]
            print(f"c={level} round {index + 1}/{rounds} {name:<10} "
                  f"{sum(r.output_len for r in done) / seconds:6.1f} tok/s "
                  f"({len(records) - len(done)} failed)", flush=True)
            kept, total = pooled[name]
            pooled[name] = (kept + records, total + seconds)
    return {name: asdict(summarize(records, concurrency=level, duration_s=seconds))
            for name, (records, seconds) in pooled.items()}


def kill_one_under_load(root: str, requests: int, concurrency: int) -> dict[str, Any]:
    """``requests`` non-streamed chats, ``concurrency`` at a time; 3 s in, the busiest
    replica's process is killed. Counts the requests that did not succeed."""
    statuses: list[int] = []

    async def client(queue: asyncio.Queue[int], http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                reply = await http.post(f"{root}/v1/chat/completions", json={
                    "model": MODEL, "max_tokens": 48, "ignore_eos": True, "messages": [
                        {"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}]})
                statuses.append(reply.status_code)
            except httpx.HTTPError:
                statuses.append(0)

    async def run() -> tuple[str, float]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        async with httpx.AsyncClient(timeout=300) as http:
            tasks = [asyncio.create_task(client(queue, http)) for _ in range(concurrency)]
            await asyncio.sleep(3.0)
            health = (await http.get(f"{root}/health")).json()
            victim = max(health["replicas"], key=lambda r: r["running"])
            os.kill(victim["pid"], signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.gather(*tasks)
            return victim["replica"], time.monotonic() - killed

    victim, after = asyncio.run(run())
    return {"requests": requests, "concurrency": concurrency, "killed_replica": victim,
            "seconds_after_kill": round(after, 1), "succeeded": statuses.count(200),
            "lost": len(statuses) - statuses.count(200), "statuses": sorted(set(statuses))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("scale", "affinity", "failover", "ingress", "all"),
                        required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(num_cpus=3)
    parts = ("scale", "affinity", "failover") if args.part == "all" else (args.part,)
    try:
        for part in parts:
            results = {"part": part, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       **run_part(part, cluster, args.rounds)}
            print(json.dumps(results, indent=1)[:3000], flush=True)
            (OUT / f"ray_{part}.json").write_text(json.dumps(results, indent=1))
    finally:
        print("left behind:", cluster.shutdown() or "nothing", flush=True)


def run_part(part: str, cluster: LocalCluster, rounds: int) -> dict[str, Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def up(name: str, extra: list[str]) -> str:
        process, root = start(name, extra)
        processes.append(process)
        return root

    try:
        if part == "scale":
            servers = {"direct": up("direct", []),
                       "ray-1": up("ray-1", ray_server(cluster, "one", 1)),
                       "ray-2": up("ray-2", ray_server(cluster, "two", 2))}
            single = {name: servers[name] for name in ("direct", "ray-1")}
            return {"c16": measure(servers, rounds, concurrency=16, requests=32,
                                   max_tokens=32, ignore_eos=True),
                    "c1": measure(single, rounds, concurrency=1, requests=6, max_tokens=24,
                                  ignore_eos=True)}
        if part == "ingress":  # the ingress cost alone, without queueing
            servers = {"direct": up("direct", []),
                       "ray-1": up("ray-1", ray_server(cluster, "one", 1))}
            return {"c1": measure(servers, rounds, concurrency=1, requests=8, max_tokens=24,
                                  ignore_eos=True)}
        if part == "affinity":
            servers = {"prefix": up("prefix", ray_server(cluster, "prefix", 2)),
                       "round-robin": up("round-robin", ray_server(
                           cluster, "rr", 2, "--ray-router", "round-robin"))}
            # 32 conversations of 3 turns a round, as many as the two replicas' 16 slots can
            # keep the caches of when each conversation stays on one replica. The later
            # turns come back in a random order: round robin must not find a conversation's
            # replica again by the waves' repeating one order.
            # "documents": each conversation carries its own 300-word document beside the
            # shared system prompt; "shared": the system prompt alone.
            return {name: measure(servers, rounds, concurrency=8, requests=96, max_tokens=32,
                                  dataset="multi-turn", turns=3, context_words=words)
                    for name, words in (("documents", 300), ("shared", 0))}
        root = up("failover", ray_server(cluster, "failover", 2))
        return {"failover": kill_one_under_load(root, requests=48, concurrency=16)}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
