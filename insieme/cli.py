"""The ``insieme`` command: ``serve`` (and the subcommands that other modules add)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from insieme.bench.cli import add_bench_command
from insieme.chat import add_chat_command
from insieme.config import (
    BUNDLED_MODEL_NAME,
    EngineConfig,
    ServerConfig,
    bundled_model_path,
)
from insieme.errors import ConfigError, InsiemeError

_ENGINE_DEFAULTS = EngineConfig()
_SERVER_DEFAULTS = ServerConfig()


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a GGUF model with a Together/OpenAI-compatible API")
    p.add_argument("--host", default=_SERVER_DEFAULTS.host)
    p.add_argument("--port", type=int, default=_SERVER_DEFAULTS.port)
    p.add_argument("--model", default=None,
                   help="a GGUF file (default: the bundled SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="the first is reported in responses; every name is accepted")
    p.add_argument("--api-key", default=os.environ.get("INSIEME_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (also INSIEME_API_KEY)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="context length per request (default: the model's, at most 8192)")
    p.add_argument("--default-max-tokens", type=int,
                   default=_SERVER_DEFAULTS.default_max_tokens,
                   help="max_tokens when a request gives none")
    p.add_argument("--max-num-seqs", type=int, default=_ENGINE_DEFAULTS.max_num_seqs,
                   help="sequences decoded together in one batch")
    p.add_argument("--max-num-batched-tokens", type=int,
                   default=_ENGINE_DEFAULTS.max_num_batched_tokens,
                   help="tokens per engine step (decodes plus prompt chunks)")
    p.add_argument("--max-queue", type=int, default=_ENGINE_DEFAULTS.max_queue,
                   help="requests that may wait for a slot; beyond it, 429")
    p.add_argument("--kv-cache-tokens", type=int, default=None,
                   help="KV cache cells shared by all sequences (default: derived)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--no-prefix-caching", action="store_true",
                   help="do not reuse KV cache across requests")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from insieme.api.app import create_app
    from insieme.engine.llama_engine import LlamaEngine

    model_path = args.model or str(bundled_model_path())
    names = tuple(args.served_model_name) if args.served_model_name else (
        (BUNDLED_MODEL_NAME,) if args.model is None else (os.path.basename(model_path),)
    )
    engine_config = EngineConfig(
        model_path=model_path,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_queue=args.max_queue,
        kv_cache_tokens=args.kv_cache_tokens,
        n_threads=args.threads,
        enable_prefix_caching=not args.no_prefix_caching,
    )
    config = ServerConfig(
        host=args.host,
        port=args.port,
        served_model_names=names,
        api_key=args.api_key or None,
        default_max_tokens=args.default_max_tokens,
        engine=engine_config,
    )
    engine = LlamaEngine(engine_config)
    app = create_app(engine, config)
    server = uvicorn.Server(
        uvicorn.Config(app, host=config.host, port=config.port, log_level=args.log_level,
                       access_log=False, timeout_graceful_shutdown=5)
    )
    shown_host = f"[{config.host}]" if ":" in config.host else config.host
    print(
        f"insieme: serving {config.model_id} ({model_path}) on "
        f"http://{shown_host}:{config.port}/v1",
        flush=True,
    )
    server.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insieme", description="A self-hosted, Together-compatible LLM inference server."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    add_bench_command(sub)
    add_chat_command(sub)
    return parser




def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except InsiemeError as exc:
        print(f"insieme: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["main", "build_parser", "ConfigError"]
