"""The engine's limit on this machine: insieme's engine loop (scheduler, samplers, logprobs,
detokeniser, stop handling; no HTTP) as a fraction of a reference loop that does only
``llama_decode`` and the cheapest possible pick.

    python benchmarks/engine_limit.py [--tokens 128] [--seqs 1,4,16] [--rounds 3]
        [--threads 2] [--trees new=.,old=../wt-before] [--batched-bench] [--json out.json]

The reference loop fills one llama_batch (a row per sequence, rows in increasing sequence
id, ids 0..n-1, each sequence in its own KV stream), calls ``llama_decode``, and picks every
row's next token at once with one numpy argmax over ``llama_get_logits``: no sampler
chains, no logprobs, no per-token Python beyond filling the batch. Its context has the
engine's shape (``context_shape`` of the same ``EngineConfig``: cells, batch, sequence ids,
threads), and it decodes the same prompt, prefilled once and copied to every sequence.

Every measurement runs in a process of its own (llama.cpp's OpenMP workers belong to the
thread that first decodes; a second thread decoding in the same process ran at 40 instead
of 110 tok/s), and each round runs the reference and every tree's engine in turn at each
level, so the machine's drift (±10% over minutes here) hits them alike. ``--trees`` names
source trees whose engine to measure (the engine is imported with PYTHONPATH set to the
tree: the layout before issue 14, ``insieme.engine.llama_engine``, works too); the
reference is llama.cpp alone and shared by all of them.

``--batched-bench`` also runs llama.cpp's own ``llama-batched-bench`` (built by
``benchmarks/build_llama_server.sh``) on the same file, context and threads, alternating
with the reference loop, and prints its decode rate (S_TG) beside the loop's. The command
it runs, for one stream per sequence (the engine's layout; ``-kvu`` would share one pool):

    llama-batched-bench -m MODEL -c 65536 -b 512 -ub 512 -npp 22 -ntg 128 -npl 1,4,16 -t 2
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import inspect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
BATCHED_BENCH = HERE / "out" / "llama.cpp" / "build" / "bin" / "llama-batched-bench"
PROMPT = "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n" \
         "<|im_start|>assistant\n"
# The engine's configuration in every tree: 16 sequence ids, the default model length.
MAX_NUM_SEQS = 16


def engine_config(threads: int) -> Any:
    from insieme.config import EngineConfig, bundled_model_path

    return EngineConfig(model_path=str(bundled_model_path()), max_num_seqs=MAX_NUM_SEQS,
                        n_threads=threads)


def engine_shape(threads: int) -> dict[str, int]:
    """The engine's context (n_ctx, n_batch, n_seq_max), from its own ``context_shape``."""
    try:
        from insieme.engine.llama.engine import context_shape
    except ImportError:  # the tree before issue 14
        from insieme.engine.llama_engine import context_shape  # type: ignore[no-redef]
    import llama_cpp as llama

    model = _load_model()
    n_train = int(llama.llama_model_n_ctx_train(model))
    llama.llama_model_free(model)
    shape = context_shape(engine_config(threads), n_train)
    assert not shape.kv_unified
    return {"n_ctx": shape.n_ctx, "n_batch": shape.n_batch, "n_seq_max": shape.n_seq_max}


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    return None


def _load_model() -> Any:
    import llama_cpp as llama

    from insieme.config import bundled_model_path

    llama.llama_log_set(_quiet_log, ctypes.c_void_p(0))
    llama.llama_backend_init()
    return llama.llama_model_load_from_file(str(bundled_model_path()).encode(),
                                            llama.llama_model_default_params())


def reference_decode(n_seqs: int, n_tokens: int, threads: int, shape: dict[str, int],
                     warmup: int = 8) -> float:
    """Decode tok/s of the reference loop: ``llama_decode`` and one argmax over all rows."""
    import llama_cpp as llama
    import numpy as np

    model = _load_model()
    vocab = llama.llama_model_get_vocab(model)
    n_vocab = int(llama.llama_vocab_n_tokens(vocab))
    params = llama.llama_context_default_params()  # as insieme's LlamaRuntime sets it
    params.n_ctx = shape["n_ctx"]
    params.n_batch = params.n_ubatch = shape["n_batch"]
    params.n_seq_max = shape["n_seq_max"]
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    params.no_perf = True
    ctx = llama.llama_init_from_model(model, params)
    memory = llama.llama_get_memory(ctx)
    data = PROMPT.encode()
    out = (llama.llama_token * (len(data) + 8))()
    n_prompt = llama.llama_tokenize(vocab, data, len(data), out, len(data) + 8, False, True)
    prompt = list(out[:n_prompt])
    batch = llama.llama_batch_init(max(n_prompt, n_seqs), 0, shape["n_seq_max"])
    token = np.ctypeslib.as_array(batch.token, shape=(max(n_prompt, n_seqs),))
    pos = np.ctypeslib.as_array(batch.pos, shape=(max(n_prompt, n_seqs),))

    def prefill() -> np.ndarray:
        llama.llama_memory_clear(memory, True)
        for i, tok in enumerate(prompt):
            token[i], pos[i], batch.n_seq_id[i], batch.logits[i] = tok, i, 1, i == n_prompt - 1
            batch.seq_id[i][0] = 0
        batch.n_tokens = n_prompt
        assert llama.llama_decode(ctx, batch) == 0
        first = int(np.ctypeslib.as_array(llama.llama_get_logits_ith(ctx, n_prompt - 1),
                                          shape=(n_vocab,)).argmax())
        for seq in range(1, n_seqs):  # a KV stream each: copy the whole stream (as insieme)
            llama.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        # The decode rows, set once: row i is sequence i, wanting logits.
        for i in range(n_seqs):
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = i
            batch.logits[i] = 1
        batch.n_tokens = n_seqs
        return np.full(n_seqs, first, dtype=np.int32)

    def run(steps: int) -> float:
        picks = prefill()
        started = time.perf_counter()
        for step in range(steps):
            token[:n_seqs] = picks
            pos[:n_seqs] = n_prompt + step
            assert llama.llama_decode(ctx, batch) == 0
            logits = np.ctypeslib.as_array(llama.llama_get_logits(ctx), shape=(n_seqs, n_vocab))
            picks = logits.argmax(axis=1)
        return n_seqs * steps / (time.perf_counter() - started)

    run(warmup)
    rate = run(n_tokens)
    llama.llama_batch_free(batch)
    llama.llama_free(ctx)
    llama.llama_model_free(model)
    return rate


async def engine_decode(n_seqs: int, n_tokens: int, threads: int) -> float:
    """Output tok/s of insieme's engine loop on n_seqs concurrent requests (no HTTP), for
    the tree on PYTHONPATH (before issue 14 ``tokenize``/``submit`` were not coroutines)."""
    from insieme.engine.types import GenerationRequest, SamplingParams

    try:
        from insieme.engine.llama.engine import LlamaEngine
    except ImportError:
        from insieme.engine.llama_engine import LlamaEngine  # type: ignore[no-redef]

    async def resolved(value: Any) -> Any:
        return await value if inspect.isawaitable(value) else value

    engine = LlamaEngine(engine_config(threads))
    await engine.start()
    await engine.wait_ready()
    prompt = await resolved(engine.tokenize(PROMPT, add_special=False))
    params = SamplingParams(temperature=0, max_tokens=n_tokens, ignore_eos=True)

    async def one(i: int) -> int:
        stream = await resolved(engine.submit(GenerationRequest(f"b{n_seqs}-{i}", prompt,
                                                                params)))
        count = 0
        async for output in stream:
            count += output.token is not None
        return count

    await one(-1)  # warm the prefix cache so the measurement is decode-bound
    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(n_seqs)))
    rate = sum(counts) / (time.perf_counter() - started)
    await engine.stop()
    return rate


def batched_bench(levels: list[int], n_tokens: int, threads: int, shape: dict[str, int],
                  n_prompt: int) -> dict[int, float]:
    """llama-batched-bench's decode rate (S_TG, tok/s) at each level, one stream each."""
    from insieme.config import bundled_model_path

    if not BATCHED_BENCH.exists():
        sys.exit(f"{BATCHED_BENCH} is missing: run benchmarks/build_llama_server.sh")
    command = [str(BATCHED_BENCH), "-m", str(bundled_model_path()), "-c", str(shape["n_ctx"]),
               "-b", str(shape["n_batch"]), "-ub", str(shape["n_batch"]),
               "-npp", str(n_prompt), "-ntg", str(n_tokens),
               "-npl", ",".join(map(str, levels)), "-t", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rates = {}
    for line in out.splitlines():  # |    PP |     TG |    B |   N_KV |   T_PP s | ...
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and re.fullmatch(r"\d+", cells[2]):
            rates[int(cells[2])] = float(cells[7])  # S_TG t/s
    return rates


def child(role: str, n_seqs: int, n_tokens: int, threads: int, tree: str | None) -> float:
    """One measurement in a fresh process (the engine's tree first on PYTHONPATH)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree
    out = subprocess.run([sys.executable, __file__, "--child", role, "--seqs", str(n_seqs),
                          "--tokens", str(n_tokens), "--threads", str(threads)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return float(out.split()[-1])


def prompt_length() -> int:
    import llama_cpp as llama

    model = _load_model()
    vocab = llama.llama_model_get_vocab(model)
    data = PROMPT.encode()
    out = (llama.llama_token * (len(data) + 8))()
    n = llama.llama_tokenize(vocab, data, len(data), out, len(data) + 8, False, True)
    llama.llama_model_free(model)
    return int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seqs", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--trees", default=f"engine={HERE.parent}",
                        help="label=path,... of source trees whose engine to measure")
    parser.add_argument("--batched-bench", action="store_true",
                        help="also run llama.cpp's llama-batched-bench, alternating")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        n = int(args.seqs)
        if args.child == "reference":
            print(reference_decode(n, args.tokens, args.threads, engine_shape(args.threads)))
        else:
            print(asyncio.run(engine_decode(n, args.tokens, args.threads)))
        return
    levels = [int(x) for x in args.seqs.split(",")]
    if max(levels) > MAX_NUM_SEQS:
        sys.exit(f"at most {MAX_NUM_SEQS} sequences")
    trees = dict(item.split("=", 1) for item in args.trees.split(","))
    shape = engine_shape(args.threads)
    n_prompt = prompt_length()
    print(f"context {shape}, prompt {n_prompt} tokens, {args.tokens} generated, "
          f"{args.threads} threads", flush=True)
    runs: dict[str, dict[int, list[float]]] = {
        name: {n: [] for n in levels} for name in ["reference", *trees]
        + (["batched-bench"] if args.batched_bench else [])}
    for round_no in range(args.rounds):
        if args.batched_bench:
            for n, rate in batched_bench(levels, args.tokens, args.threads, shape,
                                         n_prompt).items():
                runs["batched-bench"][n].append(rate)
        for n in levels:
            # The order rotates each round, so neither side always runs first.
            order = ["reference", *trees]
            order = order[round_no % len(order):] + order[:round_no % len(order)]
            for name in order:
                rate = child("reference" if name == "reference" else "engine", n, args.tokens,
                             args.threads, None if name == "reference" else trees[name])
                runs[name][n].append(rate)
            line = " | ".join(f"{name} {runs[name][n][-1]:6.1f}" for name in runs
                              if runs[name][n])
            print(f"round {round_no + 1}, {n:>2} seqs: {line} tok/s", flush=True)
    results = []
    print(f"\nmedian of {args.rounds} rounds, tok/s (engine as % of the reference loop)")
    for n in levels:
        ref = median(runs["reference"][n])
        row: dict[str, Any] = {"seqs": n, "reference_tok_s": round(ref, 1)}
        text = [f"{n:>3} seqs: reference {ref:6.1f}"]
        for name in runs:
            if name == "reference":
                continue
            rate = median(runs[name][n])
            ratios = [e / r for e, r in zip(runs[name][n], runs["reference"][n], strict=True)]
            row[f"{name}_tok_s"] = round(rate, 1)
            row[f"{name}_fraction"] = round(rate / ref, 3)
            row[f"{name}_fraction_per_round"] = [round(x, 3) for x in ratios]
            text.append(f"{name} {rate:6.1f} ({rate / ref:.1%}, rounds "
                        + " ".join(f"{x:.0%}" for x in ratios) + ")")
        results.append(row)
        print(" | ".join(text), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"tokens": args.tokens, "threads": args.threads, "prompt_tokens": n_prompt,
                       "context": shape, "trees": trees, "results": results,
                       "runs": {k: {str(n): v for n, v in d.items()} for k, d in runs.items()}},
                      fh, indent=2)


if __name__ == "__main__":
    main()
