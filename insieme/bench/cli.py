"""``insieme bench``: measure an OpenAI-compatible server from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from insieme.bench.prompts import builtin_prompts, load_prompt_file
from insieme.bench.settings import DATASETS, BenchSettings
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


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected requests per second like 0.5,2,inf, not {text!r}") from None
    if not rates:
        raise argparse.ArgumentTypeError("expected one or more rates, like 0.5,2,inf")
    return rates


# Flags that shape one dataset only: given with another, they would silently do nothing.
_DATASET_FLAGS = (("random_input_len", "--random-input-len", "random"),
                  ("random_output_len", "--random-output-len", "random"),
                  ("random_range_ratio", "--random-range-ratio", "random"),
                  ("turns", "--turns", "multi-turn"),
                  ("context_words", "--context-words", "multi-turn"),
                  ("system_prompt", "--no-system-prompt", "multi-turn"))


def add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``insieme`` command's subparsers."""
    p = sub.add_parser(
        "bench",
        help="benchmark an OpenAI-compatible server (closed or open loop, streaming)",
        description="At each concurrency level, that many clients each send their next "
        "streamed chat completion as soon as the last one finished; or, with --request-rate, "
        "requests arrive at random (Poisson) times at that rate whether or not the server "
        "keeps up. Reports throughput, goodput under --slo-* and TTFT, TPOT, ITL and "
        "end-to-end latency as vllm bench serve defines them.",
    )
    p.add_argument("--base-url", default=_DEFAULTS.base_url,
                   help="the API's base URL, ending in /v1 (default: %(default)s)")
    p.add_argument("--model", default=_DEFAULTS.model,
                   help="model to request (default: %(default)s)")
    load = p.add_argument_group("load (closed loop by default)")
    load.add_argument("--concurrency", type=_levels, default=None, metavar="N,N,...",
                      help="closed loop: concurrent clients per level (default: 1,4,16)")
    load.add_argument("--request-rate", type=_rates, default=None, metavar="R,R,...",
                      help="open loop instead: Poisson arrivals at R requests/s per level "
                      "(inf: all at once)")
    load.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                      help="open loop: at most N requests in flight (default: no cap)")
    load.add_argument("--requests", type=int, default=_DEFAULTS.requests,
                      help="requests per level (default: %(default)s)")
    load.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                      help="seeds the arrival times and the generated datasets "
                      "(default: %(default)s)")
    data = p.add_argument_group("what each request sends")
    data.add_argument("--dataset", choices=DATASETS, default=None,
                      help="builtin: 12 short chats; random: random words of random lengths; "
                      "multi-turn: conversations sharing a system prompt; grounded: copy, fix, "
                      "rewrite or convert a given text; jsonl: the --prompts file (default: "
                      "jsonl with --prompts, else builtin)")
    data.add_argument("--prompts", metavar="FILE.jsonl", default=None,
                      help='one {"messages": [...]} or {"prompt": "..."} per line, optionally '
                      f'with "max_tokens" (default: {len(builtin_prompts())} built-in chats)')
    data.add_argument("--max-tokens", type=int, default=_DEFAULTS.max_tokens,
                      help="max_tokens of requests whose dataset sets none: builtin, "
                      "multi-turn, jsonl lines without one (default: %(default)s)")
    data.add_argument("--random-input-len", type=int, default=None, metavar="N",
                      help=f"random: prompt length in words, about one token each (default: "
                      f"{_DEFAULTS.random_input_len})")
    data.add_argument("--random-output-len", type=int, default=None, metavar="N",
                      help="random: max_tokens, sent with ignore_eos (default: "
                      f"{_DEFAULTS.random_output_len})")
    data.add_argument("--random-range-ratio", type=float, default=None, metavar="R",
                      help="random: lengths uniform in [len*(1-R), len*(1+R)], 0 <= R < 1 "
                      f"(default: {_DEFAULTS.random_range_ratio})")
    data.add_argument("--turns", type=int, default=None, metavar="T",
                      help="multi-turn: requests per conversation; --requests / T "
                      f"conversations (default: {_DEFAULTS.turns})")
    data.add_argument("--context-words", type=int, default=None, metavar="W",
                      help="multi-turn: each conversation's first message also carries a "
                      "document of its own, W words (about a token each), so conversations "
                      "share only the system prompt (default: "
                      f"{_DEFAULTS.context_words})")
    data.add_argument("--no-system-prompt", dest="system_prompt", action="store_false",
                      default=None, help="multi-turn: conversations open without the shared "
                      "system prompt; with --context-words they share nothing, and a cache "
                      "can only find a conversation's own history")
    data.add_argument("--temperature", type=float, default=_DEFAULTS.temperature,
                      help="sampling temperature (default: %(default)s)")
    data.add_argument("--ignore-eos", action="store_true",
                      help="send ignore_eos, so that every reply is max_tokens long on servers "
                      "that honour it (vLLM, llama.cpp's llama-server, insieme)")
    slo = p.add_argument_group("goodput: requests/s that met every SLO given")
    slo.add_argument("--slo-ttft", type=float, default=None, metavar="MS",
                     help="time to first token at most MS milliseconds")
    slo.add_argument("--slo-tpot", type=float, default=None, metavar="MS",
                     help="time per output token at most MS milliseconds")
    p.add_argument("--api-key", default=None,
                   help="bearer key (default: TOGETHER_API_KEY, then OPENAI_API_KEY)")
    p.add_argument("--label", default=None,
                   help="name of the server in tables and plots (default: the model's "
                   "owned_by, else host:port)")
    p.add_argument("--timeout", type=float, default=_DEFAULTS.timeout,
                   help="seconds without a byte before a request fails (default: %(default)s)")
    p.add_argument("--output", metavar="RESULTS.json", default=None, help="write the results")
    p.add_argument("--plot", metavar="RESULTS.png", default=None,
                   help="plot throughput and TTFT against concurrency or request rate")
    p.add_argument("--compare", metavar="OTHER.json", default=None,
                   help="an earlier results file to show side by side, with ratios")
    p.set_defaults(handler=run_bench_command)


def settings_from_args(args: argparse.Namespace, api_key: str | None) -> BenchSettings:
    """The ``BenchSettings`` the flags describe; a flag that cannot apply is a ``ConfigError``."""
    dataset = args.dataset or ("jsonl" if args.prompts else "builtin")
    if args.prompts and dataset != "jsonl":
        raise ConfigError(f"--prompts is the jsonl dataset; it cannot go with --dataset {dataset}")
    extra: dict[str, Any] = {}
    for name, flag, applies_to in _DATASET_FLAGS:
        value = getattr(args, name)
        if value is not None and dataset != applies_to:
            raise ConfigError(f"{flag} applies to --dataset {applies_to}, not {dataset}")
        if value is not None:
            extra[name] = value
    prompts = load_prompt_file(args.prompts) if args.prompts else builtin_prompts()
    return BenchSettings(
        base_url=args.base_url,
        model=args.model,
        concurrency=args.concurrency,
        requests=args.requests,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        api_key=api_key,
        prompts=tuple(prompts),
        prompts_source=args.prompts or "built-in",
        label=args.label,
        timeout=args.timeout,
        ignore_eos=args.ignore_eos,
        request_rate=args.request_rate,
        max_concurrency=args.max_concurrency,
        seed=args.seed,
        dataset=dataset,
        slo_ttft_ms=args.slo_ttft,
        slo_tpot_ms=args.slo_tpot,
        **extra,
    )


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
    settings = settings_from_args(args, api_key or None)
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
