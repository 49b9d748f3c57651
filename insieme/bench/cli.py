"""``insieme bench``: measure an OpenAI-compatible server from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from insieme.bench.prompts import builtin_prompts, load_prompts
from insieme.bench.settings import BenchSettings
from insieme.config import BUNDLED_MODEL_NAME
from insieme.errors import ConfigError

_DEFAULTS = BenchSettings(base_url="http://127.0.0.1:8000/v1", model=BUNDLED_MODEL_NAME)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,4,16, not {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("each level must be a whole number of at least 1")
    return levels


def add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``insieme`` command's subparsers."""
    p = sub.add_parser(
        "bench",
        help="benchmark an OpenAI-compatible server (closed loop, streaming)",
        description="At each concurrency level, that many clients each send their next "
        "streamed chat completion as soon as the last one finished. Reports throughput and "
        "TTFT, TPOT, ITL and end-to-end latency as vllm bench serve defines them.",
    )
    p.add_argument("--base-url", default=_DEFAULTS.base_url,
                   help="the API's base URL, ending in /v1 (default: %(default)s)")
    p.add_argument("--model", default=_DEFAULTS.model,
                   help="model to request (default: %(default)s)")
    p.add_argument("--concurrency", type=_levels, default=_DEFAULTS.concurrency,
                   metavar="N,N,...", help="concurrent clients per level (default: 1,4,16)")
    p.add_argument("--requests", type=int, default=_DEFAULTS.requests,
                   help="requests per level (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=_DEFAULTS.max_tokens,
                   help="max_tokens per request (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=_DEFAULTS.temperature,
                   help="sampling temperature (default: %(default)s)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="send ignore_eos, so that every reply is max_tokens long on servers "
                   "that honour it (vLLM, llama.cpp's llama-server)")
    p.add_argument("--api-key", default=None,
                   help="bearer key (default: TOGETHER_API_KEY, then OPENAI_API_KEY)")
    p.add_argument("--prompts", metavar="FILE.jsonl", default=None,
                   help='one {"messages": [...]} or {"prompt": "..."} per line '
                   f"(default: {len(builtin_prompts())} built-in chat prompts)")
    p.add_argument("--label", default=None,
                   help="name of the server in tables and plots (default: the model's "
                   "owned_by, else host:port)")
    p.add_argument("--timeout", type=float, default=_DEFAULTS.timeout,
                   help="seconds without a byte before a request fails (default: %(default)s)")
    p.add_argument("--output", metavar="RESULTS.json", default=None, help="write the results")
    p.add_argument("--plot", metavar="RESULTS.png", default=None,
                   help="plot throughput and TTFT against concurrency")
    p.add_argument("--compare", metavar="OTHER.json", default=None,
                   help="an earlier results file to show side by side, with ratios")
    p.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark the flags describe; 0 when at least one request succeeded."""
    # Here, not at the top: the `insieme` command imports this module for every subcommand.
    from rich.console import Console

    from insieme.bench.plot import plot_results
    from insieme.bench.progress import RichProgress
    from insieme.bench.report import load_results, print_report, write_json
    from insieme.bench.runner import run_bench

    # Check everything that can be checked before spending minutes on the benchmark.
    for flag, path in (("--output", args.output), ("--plot", args.plot)):
        if path and not Path(path).resolve().parent.is_dir():
            raise ConfigError(f"{flag}: the folder of {path} does not exist")
    compare = load_results(args.compare) if args.compare else None
    api_key = args.api_key
    if api_key is None:
        api_key = os.environ.get("TOGETHER_API_KEY") or os.environ.get("OPENAI_API_KEY")
    prompts = load_prompts(args.prompts) if args.prompts else builtin_prompts()
    settings = BenchSettings(
        base_url=args.base_url,
        model=args.model,
        concurrency=args.concurrency,
        requests=args.requests,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        api_key=api_key or None,
        prompts=tuple(prompts),
        prompts_source=args.prompts or "built-in",
        label=args.label,
        timeout=args.timeout,
        ignore_eos=args.ignore_eos,
    )
    with RichProgress() as progress:
        results = run_bench(settings, progress=progress)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would wrap the tables at 80
        console = Console(width=140)
    print_report(results, console, compare)
    if args.output:
        write_json(results, args.output)
        console.print(f"wrote {args.output}")
    if args.plot:
        plot_results(results, args.plot, compare)
        console.print(f"wrote {args.plot}")
    if not any(level["completed"] for level in results["levels"]):
        print("insieme: every request failed; see the errors above", file=sys.stderr)
        return 1
    return 0
