"""vLLM's engine arguments from insieme's engine configuration: insieme's flags with vLLM
names (``--max-num-seqs``, ``--max-model-len``, ``--max-num-batched-tokens``, prefix caching)
and the vLLM flags, passed through as given."""

from __future__ import annotations

import os
from typing import Any

from insieme.config import MAX_DEFAULT_MODEL_LEN, EngineConfig, VllmConfig


def engine_arguments(config: EngineConfig, *, on_cpu: bool,
                     model_len: int | None = None) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``AsyncEngineArgs`` for ``config`` (``model_len``:
    the model's own context, which a CPU engine needs)."""
    flags = config.vllm or VllmConfig()
    dtype = flags.dtype
    if dtype == "auto" and on_cpu:
        # bfloat16 on a CPU without AVX-512 BF16 loads but generates garbage (oneDNN).
        dtype = "float32"
    kwargs: dict[str, Any] = {
        "model": config.model_path,
        "dtype": dtype,
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "max_num_batched_tokens": max(config.max_num_batched_tokens, config.max_num_seqs),
        "enable_prefix_caching": config.enable_prefix_caching,
        "tensor_parallel_size": flags.tensor_parallel_size,
        "pipeline_parallel_size": flags.pipeline_parallel_size,
        "data_parallel_size": flags.data_parallel_size,
        "distributed_executor_backend": flags.distributed_executor_backend,
        "quantization": flags.quantization,
        "enforce_eager": flags.enforce_eager,
        "max_logprobs": 20,  # Together's and OpenAI's most
        "disable_log_stats": True,  # insieme's own stat logger reads the counters
    }
    if on_cpu:
        # vLLM 0.32's CPU worker dies ("CPU Generator does not use offset") when a seeded
        # request's prompt is split across steps: feed every prompt whole instead, which
        # needs a step to hold the longest one.
        max_model_len = config.max_model_len or min(model_len or MAX_DEFAULT_MODEL_LEN,
                                                    MAX_DEFAULT_MODEL_LEN)
        kwargs.update(enable_chunked_prefill=False, max_model_len=max_model_len,
                      max_num_batched_tokens=max(kwargs["max_num_batched_tokens"],
                                                 max_model_len))
    if flags.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = flags.gpu_memory_utilization
    return kwargs


def apply_environment(config: EngineConfig) -> None:
    """What vLLM reads from the environment rather than its arguments: the Ray cluster its
    executor joins."""
    flags = config.vllm or VllmConfig()
    if flags.ray_address:
        os.environ["RAY_ADDRESS"] = flags.ray_address
