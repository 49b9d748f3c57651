"""The engine's limit on this machine: llama_decode called directly on 1 and N sequences,
no server, no HTTP — and insieme's engine loop (scheduler, samplers, detokeniser, no HTTP)
on the same work, as a fraction of it.

    python benchmarks/engine_limit.py [--tokens 128] [--seqs 1,16] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from insieme.config import EngineConfig, bundled_model_path
from insieme.engine.llama.engine import LlamaEngine
from insieme.engine.llama.runtime import Batch, ContextShape, LlamaRuntime
from insieme.engine.llama.sampler import Sampler
from insieme.engine.types import GenerationRequest, SamplingParams

PROMPT = "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n" \
         "<|im_start|>assistant\n"


def raw_decode(runtime: LlamaRuntime, n_seqs: int, n_tokens: int) -> float:
    """Decode tok/s of a bare loop: greedy C samplers, one llama_decode per step."""
    runtime.clear()
    prompt = runtime.tokenize(PROMPT, add_special=False)
    batch = Batch(max(len(prompt), n_seqs), n_seqs)
    for pos, token in enumerate(prompt):
        batch.add(token, pos, [0], pos == len(prompt) - 1)
    assert runtime.decode(batch) == 0
    for seq in range(1, n_seqs):  # every sequence starts from the same prompt, prefilled once
        runtime.seq_copy_prefix(0, seq, len(prompt))
    samplers = [Sampler(SamplingParams(temperature=0, ignore_eos=True), runtime.n_vocab)
                for _ in range(n_seqs)]
    rows = [len(prompt) - 1] * n_seqs
    pos = len(prompt)
    started = time.perf_counter()
    for _ in range(n_tokens):
        batch.clear()
        for seq in range(n_seqs):
            token = samplers[seq].sample(runtime.ctx, rows[seq])
            rows[seq] = batch.add(token, pos, [seq], True)
        assert runtime.decode(batch) == 0
        pos += 1
    elapsed = time.perf_counter() - started
    for sampler in samplers:
        sampler.close()
    batch.close()
    return n_seqs * n_tokens / elapsed


async def engine_decode(engine: LlamaEngine, n_seqs: int, n_tokens: int) -> float:
    """Output tok/s of insieme's engine loop on n_seqs concurrent requests (no HTTP)."""
    prompt = await engine.tokenize(PROMPT, add_special=False)
    params = SamplingParams(temperature=0, max_tokens=n_tokens, ignore_eos=True)

    async def one(i: int) -> int:
        stream = await engine.submit(GenerationRequest(f"b{n_seqs}-{i}", prompt, params))
        count = 0
        async for output in stream:
            count += output.token is not None
        return count

    await one(-1)  # warm the prefix cache so both measurements are decode-bound
    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(n_seqs)))
    return sum(counts) / (time.perf_counter() - started)


def raw_in_child(n_seqs: int, n_tokens: int, threads: int) -> float:
    """The bare loop in a process of its own: llama.cpp's OpenMP workers belong to the
    thread that first decodes, and a second thread decoding in the same process (the
    engine's) then runs at a fraction of its speed (measured 40 vs 110 tok/s)."""
    out = subprocess.run([sys.executable, __file__, "--raw", str(n_seqs), "--tokens",
                          str(n_tokens), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def raw_main(n_seqs: int, n_tokens: int, threads: int) -> None:
    runtime = LlamaRuntime(str(bundled_model_path()), ContextShape(
        n_ctx=16384, n_batch=512, n_seq_max=max(n_seqs, 1), n_threads=threads))
    raw_decode(runtime, n_seqs, 8)  # warm up
    print(raw_decode(runtime, n_seqs, n_tokens))
    runtime.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seqs", default="1,16")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default=None)
    parser.add_argument("--raw", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw is not None:
        raw_main(args.raw, args.tokens, args.threads)
        return
    levels = [int(x) for x in args.seqs.split(",")]
    model = str(bundled_model_path())
    config = EngineConfig(model_path=model, max_num_seqs=max(levels), n_threads=args.threads)
    results = []
    engine = LlamaEngine(config)
    await engine.start()
    await engine.wait_ready()
    for n in levels:
        # Interleave the two so drift on a shared machine hits both alike.
        raw = raw_in_child(n, args.tokens, args.threads)
        ours = await engine_decode(engine, n, args.tokens)
        results.append({"seqs": n, "llama_decode_tok_s": round(raw, 1),
                        "insieme_engine_tok_s": round(ours, 1),
                        "fraction": round(ours / raw, 3)})
        print(f"{n:>3} seqs: llama_decode loop {raw:7.1f} tok/s | insieme engine "
              f"{ours:7.1f} tok/s | {ours / raw:.1%}", flush=True)
    await engine.stop()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"tokens": args.tokens, "threads": args.threads, "results": results}, fh,
                      indent=2)


if __name__ == "__main__":
    asyncio.run(main())
