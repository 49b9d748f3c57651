"""The backends the conformance suite runs on: one entry each in ``BACKENDS``.

A new backend (vLLM, a Ray replica) is one more entry: an async factory for an engine that
will load when started, and, if it has one, a way to make its load fail. Each factory
imports its backend itself, so a backend whose package is missing fails only its own tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from insieme.config import EngineConfig, bundled_model_path
from insieme.engine.base import Engine

# A load that takes longer fails its test instead of hanging it (vLLM on a busy CPU: ~1 min).
LOAD_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Backend:
    """How the suite gets one backend's engines, none of them started yet.

    ``make`` builds one that loads; ``make_broken`` (given a scratch folder) one whose load
    fails, with the text its ``failure`` must name, or is None where the backend has no way
    to fail a load. ``marks`` go on every test of the backend.
    """

    make: Callable[[], Awaitable[Engine]]
    make_broken: Callable[[Path], Awaitable[tuple[Engine, str]]] | None = None
    marks: tuple[pytest.MarkDecorator, ...] = ()


async def started(engine: Engine) -> Engine:
    """``engine`` started and ready."""
    await engine.start()
    async with asyncio.timeout(LOAD_SECONDS):
        await engine.wait_ready()
    return engine


async def fake_engine() -> Engine:
    from insieme.engine.fake import FakeEngine

    # A token takes a moment, as on any real backend: requests can be seen running.
    return FakeEngine(token_delay=0.001)


def _llama_config(model_path: str) -> EngineConfig:
    return EngineConfig(model_path=model_path, max_model_len=512, max_num_seqs=4, n_threads=1)


async def llama_engine() -> Engine:
    from insieme.engine.llama.engine import LlamaEngine

    return LlamaEngine(_llama_config(str(bundled_model_path())))


async def broken_llama_engine(folder: Path) -> tuple[Engine, str]:
    from insieme.engine.llama.engine import LlamaEngine

    model = folder / "corrupt.gguf"
    model.write_bytes(b"this is not a GGUF model\n" * 64)
    return LlamaEngine(_llama_config(str(model))), model.name


def _vllm_config(model_path: str) -> EngineConfig:
    from insieme.config import VllmConfig

    return EngineConfig(model_path=model_path, backend="vllm", max_model_len=512,
                        max_num_seqs=4, vllm=VllmConfig(enforce_eager=True))


async def vllm_engine() -> Engine:
    from tests.engine.vllm.model import converted_model, require_vllm, use_vllm_environment

    require_vllm()
    use_vllm_environment()
    from insieme.engine.vllm.engine import VllmEngine

    return VllmEngine(_vllm_config(str(await asyncio.to_thread(converted_model))))


async def broken_vllm_engine(folder: Path) -> tuple[Engine, str]:
    from tests.engine.vllm.model import require_vllm, use_vllm_environment

    require_vllm()
    use_vllm_environment()
    from insieme.engine.vllm.engine import VllmEngine

    model = folder / "corrupt-model"
    model.mkdir()
    (model / "config.json").write_text("this is not a model's config\n")
    return VllmEngine(_vllm_config(str(model))), model.name
_ray_apps = itertools.count()


async def ray_engine() -> Engine:
    """The llama.cpp engine as one replica on the session's two-node Ray cluster, behind a
    ``RayEngine`` (each engine its own Serve application)."""
    from tests.engine.ray.cluster import require_ray, shared_cluster

    require_ray()
    from insieme.engine.ray.config import RayConfig
    from insieme.engine.ray.engine import RayEngine
    from insieme.engine.ray.sources import LaunchedReplicas

    config = RayConfig(address=shared_cluster().address, replicas=1, num_cpus=1,
                       app_name=f"conformance-{next(_ray_apps)}")
    return RayEngine(LaunchedReplicas(_llama_config(str(bundled_model_path())), config))


BACKENDS: dict[str, Backend] = {
    "fake": Backend(make=fake_engine),
    "llama": Backend(make=llama_engine, make_broken=broken_llama_engine,
                     marks=(pytest.mark.model,)),
    "vllm": Backend(make=vllm_engine, make_broken=broken_vllm_engine,
                    marks=(pytest.mark.vllm,)),
    "ray": Backend(make=ray_engine, marks=(pytest.mark.model,)),
}
