"""Noisy neighbour (issue 13): 15 well-behaved streams, alone and beside one client that sends
the worst requests the server's limits still allow, on one `insieme serve`.

    python benchmarks/noisy_neighbour.py [--rounds 3] [--requests 45] [--kinds all,stops,...]

The neighbour sends, one after another (streamed, max_tokens as the others): 16 stop strings
of --max-stop-length characters that never match; a JSON schema just under --max-schema-bytes
(an enum as wide as fits, the costliest shape per token); and a prompt as long as the context
allows, made fresh each time so that the prefix cache cannot help. Each kind runs on its own
and all three in turn ("all"); "churn" sends the schema request without its schema and with
the 13 tokens it answers in, to tell the grammar's cost from that of a short request a
second. The machine drifts, so the phases alternate in rounds and each
phase's requests are pooled. Reported: the well-behaved streams' TPOT p50/p99 (and TTFT) with
the neighbour over without it. Writes benchmarks/out/noisy_neighbour.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
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
from insieme.config import LimitsConfig, bundled_model_path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
MODEL = "smollm2"
LIMITS = LimitsConfig()
WORDS = ("river stone market lantern orbit velvet canyon ledger harbor meadow signal copper "
         "thistle beacon quarry saddle ember glacier parcel violet").split()


def stop_body(max_tokens: int) -> dict[str, Any]:
    stops = [("#" + chr(0x2460 + i)) * (LIMITS.max_stop_length // 2) for i in range(16)]
    return {"messages": [{"role": "user", "content": "Write about the sea."}],
            "stop": [s[:LIMITS.max_stop_length] for s in stops[:LIMITS.max_stop_strings]],
            "max_tokens": max_tokens}


def schema_body(max_tokens: int) -> dict[str, Any]:
    values: list[str] = []
    schema: dict[str, Any] = {"type": "object", "properties": {"pick": {"enum": values}},
                              "required": ["pick"]}
    for i in itertools.count():  # as wide an enum as the byte limit admits
        values.append(f"option-{i}")
        if len(json.dumps(schema, separators=(",", ":"))) > LIMITS.max_schema_bytes:
            values.pop()
            break
    return {"messages": [{"role": "user", "content": "Pick an option."}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "pick", "schema": schema}},
            "max_tokens": max_tokens}


def long_prompt_body(max_tokens: int, context: int, rng: random.Random) -> dict[str, Any]:
    # About 1.3 tokens a word here; leave room for the template and the reply.
    words = int((context - max_tokens - 64) / 1.35)
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "context_length_exceeded_behavior": "truncate"}


async def neighbour(base_url: str, kinds: list[str], max_tokens: int, context: int,
                    stop: asyncio.Event, sent: dict[str, int],
                    busy: dict[str, float]) -> None:
    rng = random.Random(7)
    async with httpx.AsyncClient(timeout=600) as client:
        for kind in itertools.cycle(kinds):
            if stop.is_set():
                return
            if kind == "stops":
                body = stop_body(max_tokens)
            elif kind == "schema":
                body = schema_body(max_tokens)
            elif kind == "churn":  # the schema request's traffic without its schema
                body = {**schema_body(13), "max_tokens": 13}
                del body["response_format"]
            else:
                body = long_prompt_body(max_tokens, context, rng)
            body.update(model=MODEL, stream=True, temperature=0)
            started = time.perf_counter()
            async with client.stream("POST", f"{base_url}/chat/completions",
                                     json=body) as response:
                if response.status_code != 200:
                    raise SystemExit(f"the neighbour's {kind} request was refused: "
                                     f"{(await response.aread()).decode()[:300]}")
                async for _ in response.aiter_lines():
                    pass
            sent[kind] = sent.get(kind, 0) + 1
            busy[kind] = busy.get(kind, 0.0) + time.perf_counter() - started


async def phase(base_url: str, kinds: list[str], requests: int, max_tokens: int,
                context: int) -> tuple[list[RequestRecord], float, dict[str, int],
                                       dict[str, float]]:
    settings = BenchSettings(base_url=base_url, model=MODEL, concurrency=(15,),
                             requests=requests, max_tokens=max_tokens, temperature=0.0,
                             ignore_eos=True, label="well-behaved")
    stop = asyncio.Event()
    sent: dict[str, int] = {}
    busy: dict[str, float] = {}  # the neighbour's seconds per kind, request to last byte
    task = (asyncio.create_task(neighbour(base_url, kinds, max_tokens, context, stop, sent,
                                          busy)) if kinds else None)
    try:
        records, seconds = await run_level_records(settings, 15)
    finally:
        stop.set()
        if task is not None:
            await task
    return records, seconds, sent, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=45, help="well-behaved, per phase")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=2048, help="--max-model-len")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--kinds", default="stops,schema,prompt,all")
    parser.add_argument("--serve-args", default="", help="more flags for insieme serve")
    parser.add_argument("--tag", default="", help="suffix for the output files")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    from side_by_side import start  # the same start-and-wait as the side-by-side run

    command = [sys.executable, "-m", "insieme", "serve", "--port", "{port}",
               "--model", str(bundled_model_path()), "--served-model-name", MODEL,
               "--threads", str(args.threads), "--max-num-seqs", "16",
               "--max-model-len", str(args.context), "--log-level", "warning",
               "--no-usage-db", *args.serve_args.split()]
    process, base_url = start("insieme-noisy", command)
    phases = {"alone": []} | {kind: ([kind] if kind != "all" else ["stops", "schema", "prompt"])
                              for kind in args.kinds.split(",")}
    pooled: dict[str, tuple[list[RequestRecord], float]] = {name: ([], 0.0) for name in phases}
    counts: dict[str, dict[str, int]] = {name: {} for name in phases}
    busy: dict[str, dict[str, float]] = {name: {} for name in phases}
    try:
        for round_index in range(args.rounds):
            names = list(phases)
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                records, seconds, sent, spent = asyncio.run(phase(
                    base_url, phases[name], args.requests, args.max_tokens, args.context))
                done = [r for r in records if r.ok]
                print(f"round {round_index + 1}/{args.rounds} {name:<7} "
                      f"{sum(r.output_len for r in done) / seconds:6.1f} tok/s, "
                      f"{len(records) - len(done)} failed, neighbour sent {sent}", flush=True)
                kept, total = pooled[name]
                pooled[name] = (kept + records, total + seconds)
                for kind, count in sent.items():
                    counts[name][kind] = counts[name].get(kind, 0) + count
                    busy[name][kind] = busy[name].get(kind, 0.0) + spent[kind]
    finally:
        process.terminate()
        process.wait(timeout=30)
    results = {name: {"metrics": asdict(summarize(records, concurrency=15, duration_s=seconds)),
                      "neighbour_requests": counts[name],
                      "neighbour_mean_s": {k: busy[name][k] / n for k, n in counts[name].items()}}
               for name, (records, seconds) in pooled.items()}
    base = results["alone"]["metrics"]
    lines = ["| neighbour | TPOT p50 ms | TPOT p99 ms | TPOT p50 × | TPOT p99 × | TTFT p50 ms "
             "| TTFT p99 ms | tok/s | neighbour's requests (mean s each) |",
             "|---|" + "---|" * 8]
    for name, entry in results.items():
        m = entry["metrics"]
        tpot, ttft = m["tpot_ms"], m["ttft_ms"]
        neighbour_cell = ", ".join(f"{k} {n} ({entry['neighbour_mean_s'][k]:.1f})"
                                   for k, n in entry["neighbour_requests"].items()) or "-"
        lines.append(
            f"| {name} | {tpot['p50']:.1f} | {tpot['p99']:.1f} | "
            f"{tpot['p50'] / base['tpot_ms']['p50']:.2f} | "
            f"{tpot['p99'] / base['tpot_ms']['p99']:.2f} | {ttft['p50']:.0f} | "
            f"{ttft['p99']:.0f} | {m['output_throughput']:.1f} | {neighbour_cell} |")
    markdown = "\n".join(lines)
    document = {"machine": machine_info(), "args": vars(args), "limits": asdict(LIMITS),
                "command": command, "results": results}
    stem = f"noisy_neighbour{args.tag}"
    (OUT / f"{stem}.json").write_text(json.dumps(document, indent=2))
    (OUT / f"{stem}.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
