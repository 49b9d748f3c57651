"""The one place that turns an engine configuration into an engine of the backend it names.

Backends are imported here, lazily, so a backend whose optional packages are missing costs
nothing until it is asked for. The API layer never calls this: whoever builds the server (the
CLI, a model registry, a Ray replica) passes engines, or this function, in.
"""

from __future__ import annotations

from insieme.config import EngineConfig
from insieme.engine.base import Engine


def create_engine(config: EngineConfig) -> Engine:
    """A new, not yet started engine for ``config``."""
    if config.backend == "vllm":
        from insieme.engine.vllm.engine import VllmEngine

        return VllmEngine(config)
    from insieme.engine.llama.engine import LlamaEngine

    return LlamaEngine(config)
