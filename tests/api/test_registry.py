"""The model registry's policy on scripted engines: load on demand, least recently used idle
model out first, never one in use or pinned, keep-alive on an injected clock, a failed load
named and retried, one load shared by its waiters."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from insieme.api.registry import ModelRegistry, ModelState
from insieme.catalog import CatalogConfig, ModelSpec
from insieme.config import EngineConfig
from insieme.engine.fake import FakeEngine
from insieme.errors import ConfigError, InternalError, ModelNotFoundError, ServiceUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BrokenEngine(FakeEngine):
    """Fails its load the way the llama engine does: ``wait_ready`` raises, naming the file."""

    async def wait_ready(self) -> None:
        raise ConfigError("could not load /models/broken.gguf: tensor data is not within the "
                          "file bounds")


# Each test model's engine settings differ in max_num_seqs, so the factory knows which it builds.
_NAMES: list[str] = []


def spec(name: str, *, pinned: bool = False, memory: int = 0,
         names: tuple[str, ...] = ()) -> ModelSpec:
    if name not in _NAMES:
        _NAMES.append(name)
    return ModelSpec(names or (name,), EngineConfig(max_num_seqs=_NAMES.index(name) + 1),
                     pinned=pinned, memory_bytes=memory)


def registry(*specs: ModelSpec, clock: Clock | None = None, broken: tuple[str, ...] = (),
             **policy: object) -> tuple[ModelRegistry, list[str]]:
    """A registry of scripted engines, and the names of the models it built, in order."""
    built: list[str] = []

    def factory(config: EngineConfig) -> FakeEngine:
        name = _NAMES[config.max_num_seqs - 1]
        built.append(name)
        return BrokenEngine() if name in broken else FakeEngine()

    models = ModelRegistry(CatalogConfig(specs, **policy),  # type: ignore[arg-type]
                           factory, clock=clock or Clock())
    return models, built


def loaded(models: ModelRegistry) -> set[str]:
    return {e.name for e in models.entries if e.state is ModelState.LOADED}


async def use(models: ModelRegistry, name: str) -> None:
    lease = await models.acquire(models.find(name))
    await lease.release()


async def settle(models: ModelRegistry) -> None:
    """Let the unloads that were begun finish."""
    for _ in range(50):
        if not any(e.state is ModelState.UNLOADING for e in models.entries):
            return
        await asyncio.sleep(0.01)


async def test_least_recently_used_idle_model_is_unloaded_first() -> None:
    clock = Clock()
    models, built = registry(spec("a"), spec("b"), spec("c"), clock=clock, max_loaded_models=2)
    await use(models, "a")
    clock.now += 1
    await use(models, "b")
    clock.now += 1
    await use(models, "a")  # a is now the more recent
    clock.now += 1
    await use(models, "c")
    assert loaded(models) == {"a", "c"} and built == ["a", "b", "c"]
    assert models.find("b").unloads == 1
    await models.stop()


async def test_a_model_in_use_is_never_unloaded() -> None:
    models, _ = registry(spec("a"), spec("b"), max_loaded_models=1, load_timeout=0.3)
    lease = await models.acquire(models.find("a"))
    with pytest.raises(ServiceUnavailable) as refused:
        await use(models, "b")  # no room while a's request runs
    assert refused.value.headers["Retry-After"] and "waiting for room" in refused.value.message
    assert loaded(models) == {"a"} and models.find("a").in_flight == 1
    models.catalog = replace(models.catalog, load_timeout=30.0)  # now b may wait long
    waiting = asyncio.ensure_future(use(models, "b"))
    await asyncio.sleep(0.05)
    assert not waiting.done() and loaded(models) == {"a"}
    await lease.release()  # the request ends: now b may take a's place
    await asyncio.wait_for(waiting, 2)
    assert loaded(models) == {"b"}
    await models.stop()


async def test_pinned_models_stay_through_pressure_and_keep_alive() -> None:
    clock = Clock()
    models, _ = registry(spec("a", pinned=True), spec("b"), spec("c"), clock=clock,
                         max_loaded_models=2, keep_alive=60.0)
    await use(models, "a")
    await use(models, "b")
    await use(models, "c")  # b goes, a is pinned
    await settle(models)
    assert loaded(models) == {"a", "c"}
    clock.now += 61
    assert await models.reap() == ["c"]
    assert loaded(models) == {"a"}
    await models.stop()


async def test_keep_alive_unloads_idle_models_on_the_clock() -> None:
    clock = Clock()
    models, _ = registry(spec("a"), spec("b"), clock=clock, keep_alive=300.0)
    await use(models, "a")
    clock.now += 100
    await use(models, "b")
    clock.now += 250  # a idle 350 s, b 250 s
    assert await models.reap() == ["a"]
    assert loaded(models) == {"b"}
    clock.now += 51
    lease = await models.acquire(models.find("a"))  # loads a again
    clock.now += 1000
    assert await models.reap() == ["b"]  # a is in use: it stays, however long
    assert loaded(models) == {"a"}
    await lease.release()
    await models.stop()


async def test_keep_alive_zero_unloads_as_the_last_request_ends() -> None:
    models, _ = registry(spec("a"), spec("b"), keep_alive=0.0)
    await use(models, "b")
    await settle(models)
    assert "b" not in loaded(models)
    await models.stop()


async def test_memory_budget_makes_room_by_estimate() -> None:
    mib = 2**20
    models, _ = registry(spec("a", memory=60 * mib), spec("b", memory=30 * mib),
                         spec("c", memory=50 * mib), memory_budget=100 * mib)
    await use(models, "a")
    await use(models, "b")  # 90 MiB: both fit
    assert loaded(models) == {"a", "b"}
    await use(models, "c")  # 140 MiB would not: a (least recently used) goes
    assert loaded(models) == {"b", "c"}
    await models.stop()


async def test_a_failed_load_names_the_file_and_the_rest_serves() -> None:
    models, built = registry(spec("good"), spec("bad"), broken=("bad",))
    with pytest.raises(InternalError) as failed:
        await use(models, "bad")
    assert failed.value.status_code == 500
    assert "/models/broken.gguf" in failed.value.message and "bounds" in failed.value.message
    assert models.find("bad").state is ModelState.FAILED
    await use(models, "good")
    with pytest.raises(InternalError):  # a later request tries again
        await use(models, "bad")
    assert built.count("bad") == 2 and models.find("bad").load_failures == 2
    await models.stop()


async def test_requests_for_a_loading_model_share_one_load() -> None:
    models, built = registry(spec("a"), spec("b"))
    entry = models.find("b")
    leases = await asyncio.gather(*(models.acquire(entry) for _ in range(5)))
    assert built == ["b"] and entry.in_flight == 5 and entry.loads == 1
    for lease in leases:
        await lease.release()
    assert entry.in_flight == 0
    await models.stop()


async def test_unknown_model_lists_the_served_ones() -> None:
    models, _ = registry(spec("org/a", names=("org/a", "a")), spec("b"))
    with pytest.raises(ModelNotFoundError) as missing:
        models.find("gpt-4")
    assert "'gpt-4'" in missing.value.message and "org/a, a, b" in missing.value.message


async def test_start_loads_the_default_and_pinned_models() -> None:
    models, _ = registry(spec("a"), spec("b"), spec("c", pinned=True))
    await models.start()
    await models.wait_ready()
    assert loaded(models) == {"a", "c"}
    await models.stop()


@pytest.mark.parametrize(("specs", "policy", "message"), [
    ((spec("a"), spec("a")), {}, "given to two models"),
    ((spec("a"), spec("b", pinned=True)), {"max_loaded_models": 1}, "must stay loaded"),
    ((spec("a", memory=10), spec("b", memory=200)), {"memory_budget": 100},
     "model b needs about"),
    ((spec("a"),), {"max_loaded_models": 0}, "at least 1"),
])
def test_policy_is_checked(specs: tuple[ModelSpec, ...], policy: dict[str, object],
                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CatalogConfig(specs, **policy)  # type: ignore[arg-type]
