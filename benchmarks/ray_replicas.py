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
  their own, and with a document but no system prompt), cached prompt tokens;
- failover: non-streamed requests at concurrency 16 on two replicas, one replica's process
  killed under load: requests lost;
- ceiling: what this machine allows two engines without Ray (two ``insieme serve`` side by
  side, each at half the concurrency, against one alone), the bound on scale-out here;
- ingress: direct against ray-1 at concurrency 1 only.

The scale part also reports where the CPU went while each server ran (``cores``): its
replicas' processes, its ingress (for ``direct``, the engine too), the client, the rest.

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
from collections.abc import Mapping
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


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) that process ``pid`` has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent not idle, so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / TICKS


def cpu_groups(roots: tuple[str, ...], pids: dict[str, int]) -> dict[str, list[int]]:
    """The processes of what is measured, by role: the engine replicas (none when the servers
    run without Ray), the servers' own processes (the ingress; with the engine in it without
    Ray) and this benchmark's client."""
    replicas = [r["pid"] for root in roots
                for r in httpx.get(f"{root}/health", timeout=10).json().get("replicas", [])
                if r.get("pid")]
    return {"replicas": replicas, "ingress": [pids[root] for root in roots],
            "client": [os.getpid()]}


def run_at_once(roots: tuple[str, ...], level: int,
                **settings: Any) -> tuple[list[RequestRecord], float]:
    """One level on ``roots`` at once, each given an equal share of the concurrency (one
    client each, in one event loop); the records pooled. One server: its own timing; several:
    the wall time from the first start to the last finish, warm-ups included."""
    share = level // len(roots)

    async def run() -> tuple[list[RequestRecord], float]:
        started = time.monotonic()
        runs = await asyncio.gather(*(run_level_records(BenchSettings(
            base_url=f"{root}/v1", model=MODEL, concurrency=(share,), temperature=0.0,
            **settings), share) for root in roots))
        if len(runs) == 1:
            return runs[0]
        return [r for records, _ in runs for r in records], time.monotonic() - started

    return asyncio.run(run())


def measure(servers: Mapping[str, str | tuple[str, ...]], rounds: int,
            pids: dict[str, int] | None = None, **settings: Any) -> dict[str, Any]:
    """Each server in turn, ``rounds`` times (the order rotating); each server's rounds pooled.
    A server given as several roots is those servers measured at once, the concurrency split
    between them. A ``seed`` differing per round keeps a later round from finding the earlier
    one's conversations in a cache. With ``pids`` (each root's own process), also where the
    machine's CPU went while each server was measured, in cores: its replicas, its ingress,
    the client, and the rest (Ray's own processes, the system)."""
    names = list(servers)
    pooled: dict[str, tuple[list[RequestRecord], float]] = {n: ([], 0.0) for n in names}
    cores: dict[str, dict[str, float]] = {n: {} for n in names}
    level = settings.pop("concurrency")
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            target = servers[name]
            roots = (target,) if isinstance(target, str) else target
            groups = cpu_groups(roots, pids) if pids else {}
            before = {g: sum(map(cpu_seconds, ps)) for g, ps in groups.items()}
            busy = machine_busy_seconds()
            records, seconds = run_at_once(roots, level, label=name, seed=index, **settings)
            used = {g: sum(map(cpu_seconds, ps)) - before[g] for g, ps in groups.items()}
            if groups:
                used["other"] = machine_busy_seconds() - busy - sum(used.values())
                for group, value in used.items():
                    cores[name][group] = cores[name].get(group, 0.0) + value
            done = [r for r in records if r.ok]
            print(f"c={level} round {index + 1}/{rounds} {name:<10} "
                  f"{sum(r.output_len for r in done) / seconds:6.1f} tok/s "
                  f"({len(records) - len(done)} failed)"
                  + "".join(f" {g} {v / seconds:.2f}" for g, v in used.items()), flush=True)
            kept, total = pooled[name]
            pooled[name] = (kept + records, total + seconds)
    results = {name: asdict(summarize(records, concurrency=level, duration_s=seconds))
               for name, (records, seconds) in pooled.items()}
    for name, (records, seconds) in pooled.items():
        # Requests that found most of their prompt cached: on the multi-turn workloads with
        # documents, a later turn that found its conversation's history (a first turn there
        # is under half system prompt, a later one over 90% history).
        results[name]["mostly_cached"] = sum(
            1 for r in records if r.ok and r.prompt_tokens and r.cached_tokens is not None
            and r.cached_tokens >= 0.7 * r.prompt_tokens)
        if cores[name]:
            results[name]["cores"] = {g: round(v / seconds, 2) for g, v in cores[name].items()}
    return results


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
    parser.add_argument("--part", choices=("scale", "affinity", "failover", "ingress", "ceiling",
                                           "all"),
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

    pids: dict[str, int] = {}  # each server's process, by its root URL

    def up(name: str, extra: list[str]) -> str:
        process, root = start(name, extra)
        processes.append(process)
        pids[root] = process.pid
        return root

    try:
        if part == "scale":
            # ray-2 with the default (prefix) router, and with round robin: the scale-out
            # workload repeats a handful of prompts, which prefix routing keeps together.
            servers = {"direct": up("direct", []),
                       "ray-1": up("ray-1", ray_server(cluster, "one", 1)),
                       "ray-2": up("ray-2", ray_server(cluster, "two", 2)),
                       "ray-2-rr": up("ray-2-rr", ray_server(cluster, "two-rr", 2,
                                                            "--ray-router", "round-robin"))}
            single = {name: servers[name] for name in ("direct", "ray-1")}
            results = {"c16": measure(servers, rounds, pids, concurrency=16, requests=32,
                                      max_tokens=32, ignore_eos=True),
                       "c1": measure(single, rounds, concurrency=1, requests=6,
                                     max_tokens=24, ignore_eos=True)}
            for name in ("ray-2", "ray-2-rr"):  # how each router split the requests
                health = httpx.get(f"{servers[name]}/health", timeout=10).json()
                results["c16"][name]["served_by_replica"] = sorted(
                    r.get("served", 0) for r in health["replicas"])
            return results
        if part == "ceiling":  # two engines on this machine without Ray: scale-out's ceiling
            # "pair": two plain servers at once, at half the concurrency each.
            direct = up("direct", [])
            ceiling: dict[str, str | tuple[str, ...]] = {
                "direct": direct, "ray-1": up("ray-1", ray_server(cluster, "one", 1)),
                "ray-2": up("ray-2", ray_server(cluster, "two", 2)),
                "pair": (direct, up("direct-2", []))}
            return {"c16": measure(ceiling, rounds, pids, concurrency=16, requests=32,
                                   max_tokens=32, ignore_eos=True)}
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
            # shared system prompt; "shared": the system prompt alone; "private": the
            # document without the system prompt, so that what is cached is history alone.
            workloads = (("documents", 300, True), ("shared", 0, True), ("private", 300, False))
            return {name: measure(servers, rounds, concurrency=8, requests=96, max_tokens=32,
                                  dataset="multi-turn", turns=3, context_words=words,
                                  system_prompt=system)
                    for name, words, system in workloads}
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
