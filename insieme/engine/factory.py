"""The one place that turns an engine configuration into an engine of the backend it names.

Backends are imported here, lazily, so a backend whose optional packages are missing costs
nothing until it is asked for. The API layer never calls this: whoever builds the server (the
CLI, a model registry, a Ray replica) passes engines, or this function, in.
"""

from __future__ import annotations

import os

from insieme.config import EngineConfig
from insieme.engine.base import Engine, PromptRenderer


def create_engine(config: EngineConfig) -> Engine:
    """A new, not yet started engine for ``config``."""
    if config.backend == "vllm":
        from insieme.engine.vllm.engine import VllmEngine

        return VllmEngine(config)
    from insieme.engine.llama.engine import LlamaEngine

    return LlamaEngine(config)


def create_prompt_renderer(config: EngineConfig) -> PromptRenderer | None:
    """What renders and tokenises ``config``'s prompts without running its model, for an
    engine that runs elsewhere (Ray replicas): the llama.cpp model file's vocabulary alone.
    None where this process cannot (another backend, or the file is not here): the engine
    then does it. Blocking (it reads the file)."""
    if config.backend != "llama" or not os.path.isfile(config.model_path):
        return None
    from insieme.engine.llama.prompts import LlamaPrompts
    from insieme.engine.llama.vocab import LlamaVocab

    return LlamaPrompts(LlamaVocab(config.model_path, vocab_only=True))
