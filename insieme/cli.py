"""The ``insieme`` command: ``serve`` (and the subcommands that other modules add)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from insieme.admin import add_admin_commands
from insieme.bench.cli import add_bench_command
from insieme.catalog import RepeatedModel, add_model_flags, catalog_config
from insieme.cli_vllm import add_convert_command, add_engine_arguments, engine_kwargs
from insieme.config import (
    FAULT_INJECTION_ENV,
    MAX_DEFAULT_MODEL_LEN,
    EngineConfig,
    LimitsConfig,
    ServerConfig,
)
from insieme.config_file import load_config_file
from insieme.errors import ConfigError, InsiemeError
from insieme.ledger import default_ledger_path
from insieme.ray_serve import add_ray_arguments, ray_engine
from insieme.terminal_chat import add_chat_command

_ENGINE_DEFAULTS = EngineConfig()
_SERVER_DEFAULTS = ServerConfig()
_LIMITS_DEFAULTS = LimitsConfig()


def _add_serve(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    file_defaults: dict[str, Any] | None = None,
) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve a GGUF model with a Together/OpenAI-compatible API")
    p.add_argument("--config", default=None, metavar="TOML",
                   help="a file with the same keys as these flags (flags override it)")
    p.add_argument("--host", default=_SERVER_DEFAULTS.host)
    p.add_argument("--port", type=int, default=_SERVER_DEFAULTS.port)
    p.add_argument("--model", action=RepeatedModel, default=None,
                   help="a GGUF file (default: the bundled SmolLM2-135M-Instruct Q4_1; with "
                   "--engine vllm a Hugging Face folder or hub id); give it again for more "
                   "models, loaded on demand")
    p.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="the first is reported in responses; every name is accepted (with "
                   "several --model: one name each)")
    add_engine_arguments(p)
    p.add_argument("--api-key", default=os.environ.get("INSIEME_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (also INSIEME_API_KEY)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help=f"context length per request (default: the model's, at most "
                   f"{MAX_DEFAULT_MODEL_LEN})")
    p.add_argument("--api-keys-file", default=None, metavar="TOML",
                   help="named API keys (SHA-256 hashes) with optional per-minute limits")
    p.add_argument("--default-max-tokens", type=int, default=None,
                   help=f"max_tokens when a request gives none (default: "
                   f"{_SERVER_DEFAULTS.default_max_tokens}, at most --max-tokens-cap)")
    p.add_argument("--max-num-seqs", type=int, default=_ENGINE_DEFAULTS.max_num_seqs,
                   help="sequences decoded together in one batch")
    p.add_argument("--max-num-batched-tokens", type=int,
                   default=_ENGINE_DEFAULTS.max_num_batched_tokens,
                   help="tokens per engine step (decodes plus prompt chunks)")
    p.add_argument("--max-queue", type=int, default=_ENGINE_DEFAULTS.max_queue,
                   help="requests that may wait for a slot; beyond it, 429")
    p.add_argument("--long-prefill-token-threshold", type=int,
                   default=_ENGINE_DEFAULTS.long_prefill_token_threshold, metavar="N",
                   help="while others decode, a prompt with more than N tokens left to feed "
                   "gets --long-prefill-chunk a step, so one long prompt cannot stall every "
                   "stream (default: %(default)s, no cap)")
    p.add_argument("--long-prefill-chunk", type=int,
                   default=_ENGINE_DEFAULTS.long_prefill_chunk, metavar="N",
                   help="tokens a step for such a prompt (default: the threshold, as vLLM)")
    p.add_argument("--speculative", choices=("ngram", "off"),
                   default=_ENGINE_DEFAULTS.speculative,
                   help="prompt-lookup speculation: draft a sequence's next tokens from "
                   "n-grams of its own prompt and output, verified in the same decode, where "
                   "its drafts hold often enough to pay (default: %(default)s)")
    p.add_argument("--num-speculative-tokens", type=int, metavar="K",
                   default=_ENGINE_DEFAULTS.num_speculative_tokens,
                   help="the longest draft (default: %(default)s)")
    p.add_argument("--prompt-lookup-max", type=int, metavar="N",
                   default=_ENGINE_DEFAULTS.prompt_lookup_max,
                   help="the longest n-gram looked up (default: %(default)s)")
    p.add_argument("--prompt-lookup-min", type=int, metavar="N",
                   default=_ENGINE_DEFAULTS.prompt_lookup_min,
                   help="the shortest n-gram looked up (default: %(default)s)")
    p.add_argument("--kv-unified", action="store_true",
                   help="one KV pool shared by all sequences (default: a stream per sequence)")
    p.add_argument("--kv-cache-tokens", type=int, default=None,
                   help="with --kv-unified: cells in the shared pool (default: derived)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--no-prefix-caching", action="store_true",
                   help="do not reuse KV cache across requests")
    p.add_argument("--max-request-bytes", type=int,
                   default=_LIMITS_DEFAULTS.max_request_bytes,
                   help="largest request body; beyond it, 413")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="longest prompt in tokens; beyond it, 400 (default: the context)")
    p.add_argument("--max-tokens-cap", type=int, default=None,
                   help="largest max_tokens a request may ask for; beyond it, 400")
    p.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS",
                   help="end a request this long after it arrived (default: never)")
    limit = p.add_argument_group("bounds on one request (each a 400 naming it when exceeded)")
    for flag, what in (("--max-json-depth", "nesting of the request body"),
                       ("--max-messages", "messages in a chat"),
                       ("--max-tools", "tools in a chat"),
                       ("--max-stop-strings", "stop strings"),
                       ("--max-stop-length", "characters in one stop string"),
                       ("--max-schema-bytes", "bytes of a JSON schema that constrains output")):
        dest = flag[2:].replace("-", "_")
        limit.add_argument(flag, type=int, default=getattr(_LIMITS_DEFAULTS, dest),
                           metavar="N", help=f"{what} (default: %(default)s)")
    limit.add_argument("--max-grammar-bytes", type=int,  # the engine's: it compiles grammars
                       default=_ENGINE_DEFAULTS.max_grammar_bytes, metavar="N",
                       help="bytes of the grammar a schema becomes (default: %(default)s)")
    limit.add_argument("--max-prompt-chars", type=int, default=None, metavar="N",
                       help="characters of prompt text, before tokenising (default: 16 per "
                       "token of --max-model-len)")
    p.add_argument("--shutdown-grace", type=float, default=_SERVER_DEFAULTS.shutdown_grace,
                   metavar="SECONDS",
                   help="on SIGTERM, time running requests get to finish")
    p.add_argument("--usage-db", default=None, metavar="PATH",
                   help=f"the usage ledger (default: $INSIEME_USAGE_DB or "
                   f"{default_ledger_path()})")
    p.add_argument("--no-usage-db", action="store_true", help="keep no usage ledger")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--log-format", default=_SERVER_DEFAULTS.log_format,
                   choices=["text", "json"], help="the request log: key=value text or JSON")
    p.add_argument("--log-prompts", action="store_true",
                   help="put prompt text in the request log (never logged otherwise)")
    add_model_flags(p)
    add_ray_arguments(p)
    p.set_defaults(handler=_serve)
    if file_defaults:
        p.set_defaults(**file_defaults)
    return p


def serve_parser() -> argparse.ArgumentParser:
    """The serve subcommand's parser on its own, to check a config file's keys against."""
    return _add_serve(argparse.ArgumentParser(prog="insieme").add_subparsers())


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine flags, every model's settings but its file (``insieme.catalog``)."""
    return EngineConfig(
        model_path="",
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_queue=args.max_queue,
        kv_cache_tokens=args.kv_cache_tokens,
        kv_unified=args.kv_unified,
        n_threads=args.threads,
        enable_prefix_caching=not args.no_prefix_caching,
        long_prefill_token_threshold=args.long_prefill_token_threshold,
        long_prefill_chunk=args.long_prefill_chunk,
        max_grammar_bytes=args.max_grammar_bytes,
        speculative=args.speculative,
        num_speculative_tokens=args.num_speculative_tokens,
        prompt_lookup_max=args.prompt_lookup_max,
        prompt_lookup_min=args.prompt_lookup_min,
        **engine_kwargs(args),
    )


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The serve flags (config file included) as a checked ``ServerConfig``; its model is
    the first of the catalogue."""
    limits = LimitsConfig(
        max_request_bytes=args.max_request_bytes,
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens_cap=args.max_tokens_cap,
        request_timeout=args.request_timeout,
        max_json_depth=args.max_json_depth,
        max_messages=args.max_messages,
        max_tools=args.max_tools,
        max_stop_strings=args.max_stop_strings,
        max_stop_length=args.max_stop_length,
        max_schema_bytes=args.max_schema_bytes,
        max_prompt_chars=args.max_prompt_chars,
    )
    default_max_tokens = args.default_max_tokens or min(
        _SERVER_DEFAULTS.default_max_tokens, args.max_tokens_cap or sys.maxsize)
    default = catalog_config(args, engine_config(args)).default
    return ServerConfig(
        host=args.host,
        port=args.port,
        served_model_names=default.names,
        api_key=args.api_key or None,
        api_keys_file=args.api_keys_file,
        default_max_tokens=default_max_tokens,
        limits=limits,
        usage_db=None if args.no_usage_db else str(args.usage_db or default_ledger_path()),
        log_format=args.log_format,
        log_prompts=args.log_prompts,
        shutdown_grace=args.shutdown_grace,
        engine=default.engine,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from insieme.api.app import create_app
    from insieme.api.lifecycle import GracefulServer
    from insieme.api.registry import ModelRegistry
    from insieme.api.requestlog import configure_logging, uvicorn_log_config
    from insieme.engine.base import Engine
    from insieme.engine.factory import create_engine
    from insieme.engine.faults import FaultHeader, FaultInjectingEngine

    config = server_config(args)
    catalog = catalog_config(args, engine_config(args))
    log_writer = configure_logging(config.log_format, args.log_level)
    faults = os.environ.get(FAULT_INJECTION_ENV) == "1"  # tests only: X-Insieme-Fault

    if args.ray_address is not None and len(catalog.models) > 1:
        raise ConfigError("--ray-address serves one model: its replicas are one Serve "
                          "deployment")

    def build(settings: EngineConfig) -> Engine:
        engine = ray_engine(args, settings) or create_engine(settings)
        return FaultInjectingEngine(engine) if faults else engine

    app = create_app(ModelRegistry(catalog, build), config)
    asgi: Any = FaultHeader(app) if faults else app
    server = GracefulServer(
        # h11 whatever else is installed: httptools (which ray[serve] and vLLM pull in)
        # answers a malformed header itself, with a plain-text 400 outside the contract.
        uvicorn.Config(asgi, host=config.host, port=config.port, log_level=args.log_level,
                       http="h11",
                       log_config=uvicorn_log_config(config.log_format), access_log=False,
                       timeout_graceful_shutdown=5),
        app.ctx.lifecycle,
        config.shutdown_grace,
        engine=app.ctx.models,
    )
    model_path = config.engine.model_path
    others = f" and {len(catalog.models) - 1} more model(s)" if len(catalog.models) > 1 else ""
    shown_host = f"[{config.host}]" if ":" in config.host else config.host
    print(
        f"insieme: serving {config.model_id} ({model_path}){others} on "
        f"http://{shown_host}:{config.port}/v1",
        flush=True,
    )
    try:
        server.run()
    finally:
        log_writer.stop()
    if server.load_failure is not None:
        print(f"insieme: {server.load_failure}", file=sys.stderr, flush=True)
        return 1
    return 0


def build_parser(serve_defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insieme", description="A self-hosted, Together-compatible LLM inference server."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub, serve_defaults)
    add_bench_command(sub)
    add_chat_command(sub)
    add_admin_commands(sub)
    add_convert_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve" and args.config:
            # Parse again with the file's values as defaults, so flags still win.
            defaults = load_config_file(args.config, serve_parser())
            args = build_parser(defaults).parse_args(argv)
        return int(args.handler(args) or 0)
    except InsiemeError as exc:
        print(f"insieme: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["main", "build_parser", "ConfigError"]
