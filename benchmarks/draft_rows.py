"""What a draft row costs: one sequence at position ~300, one llama_decode of 1 + k rows
(every row with logits), the fastest of 12 tries each. Run alone on a quiet machine.

    python benchmarks/draft_rows.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

from insieme.config import bundled_model_path
from insieme.engine.llama.runtime import Batch, ContextShape, LlamaRuntime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runtime = LlamaRuntime(str(bundled_model_path()), ContextShape(
        n_ctx=1024, n_batch=512, n_seq_max=1, n_threads=args.threads, kv_unified=False))
    batch = Batch(512, 1)
    prompt = runtime.tokenize("The quick brown fox jumps over the lazy dog. " * 30,
                              add_special=True)[:300]
    for i, token in enumerate(prompt):
        batch.add(token, i, [0], i == len(prompt) - 1)
    assert runtime.decode(batch) == 0
    pos = len(prompt)
    base = None
    for k in (0, 1, 2, 4, 8, 16, 32):
        best = float("inf")
        for _ in range(12):
            batch.clear()
            for j in range(k + 1):
                batch.add(prompt[j], pos + j, [0], True)
            started = time.perf_counter()
            assert runtime.decode(batch) == 0
            best = min(best, time.perf_counter() - started)
            runtime.seq_rm(0, pos, -1)
        base = base or best
        print(f"{k + 1:3d} rows: {best * 1000:7.2f} ms  ({(best - base) / max(k, 1) / base:.2f} "
              "of a one-row step per extra row)", flush=True)


if __name__ == "__main__":
    main()
