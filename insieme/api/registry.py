"""The models of one server, loaded on demand within a memory budget.

Each registered model (``insieme.catalog.ModelSpec``) becomes an engine, built by the factory
the server was given, when a request asks for it. A request holds a ``Lease`` on its model
from admission until its response has ended (the gate releases it), so a model with requests
in flight is never unloaded. To make room for a model, idle models are unloaded least
recently used first, never a pinned one; a model idle longer than ``keep_alive`` is unloaded
too. Every decision is taken under one condition variable, which each change notifies.

    UNLOADED -> LOADING -> LOADED -> UNLOADING -> UNLOADED
                       \\-> FAILED (a later request tries again)
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from insieme.catalog import CatalogConfig, ModelSpec
from insieme.config import EngineConfig
from insieme.engine.base import Engine
from insieme.errors import ConfigError, InternalError, ModelNotFoundError, ServiceUnavailable

log = logging.getLogger("insieme.api")

EngineFactory = Callable[[EngineConfig], Engine]
RETRY_AFTER_SECONDS = 5


class ModelState(enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(eq=False)
class ModelEntry:
    """One model's place in the registry."""

    spec: ModelSpec
    engine: Engine | None = None
    state: ModelState = ModelState.UNLOADED
    in_flight: int = 0  # leases held
    waiting: int = 0  # requests waiting for it to load: it is not evicted under them
    last_used: float = 0.0  # the registry's clock
    failure: str | None = None  # why its last load failed
    attempts: int = 0
    loads: int = 0
    unloads: int = 0
    load_failures: int = 0
    given: bool = False  # its engine was given whole: never rebuilt, never unloaded

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def context_length(self) -> int:
        if self.engine is not None and self.engine.info.max_model_len:
            return self.engine.info.max_model_len
        return self.spec.context_length or self.spec.engine.max_model_len or 0

    @property
    def occupies(self) -> bool:
        return self.state in (ModelState.LOADING, ModelState.LOADED, ModelState.UNLOADING)


class Lease:
    """A request's use of a loaded model; release it once the response has ended."""

    def __init__(self, registry: ModelRegistry, entry: ModelEntry, engine: Engine) -> None:
        self.entry = entry
        self.engine = engine
        self._registry: ModelRegistry | None = registry

    async def release(self) -> None:
        registry, self._registry = self._registry, None
        if registry is not None:
            await registry._release(self.entry)


class ModelRegistry:
    """The registered models and the policy that loads and unloads them (module docstring).

    ``clock`` (seconds, monotonic) times idleness; tests pass their own.
    """

    def __init__(self, catalog: CatalogConfig, factory: EngineFactory | None = None, *,
                 engines: dict[str, Engine] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self._factory = factory
        self._clock = clock
        self.entries = [ModelEntry(spec) for spec in catalog.models]
        self._by_name = {name: e for e in self.entries for name in e.spec.names}
        for name, engine in (engines or {}).items():
            entry = self._by_name[name]
            entry.engine, entry.given = engine, True
        if factory is None and not all(e.given for e in self.entries):
            raise ConfigError("a model registry without an engine factory needs every engine")
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._startup: list[asyncio.Task[None]] = []
        self._reaper: asyncio.Task[None] | None = None

    @classmethod
    def single(cls, engine: Engine, names: tuple[str, ...],
               config: EngineConfig | None = None) -> ModelRegistry:
        """One model whose engine is already built (tests, and servers built in code)."""
        spec = ModelSpec(names, config or EngineConfig(), pinned=True)
        return cls(CatalogConfig((spec,)), engines={spec.name: engine})

    @property
    def default(self) -> ModelEntry:
        return self.entries[0]

    # -- finding and using a model --------------------------------------------------------

    def find(self, name: str) -> ModelEntry:
        entry = self._by_name.get(name)
        if entry is None:
            served = ", ".join(n for e in self.entries for n in e.spec.names)
            raise ModelNotFoundError(
                f"The model '{name}' does not exist. This server serves: {served}",
                param="model")
        return entry

    async def acquire(self, entry: ModelEntry) -> Lease:
        """A lease on ``entry``, loading it (and unloading others to make room) if need be;
        waits up to the catalogue's ``load_timeout``, then ``ServiceUnavailable`` with
        Retry-After. A load that fails is an ``InternalError`` naming the file and why."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.catalog.load_timeout
        attempt: int | None = None
        async with self._changed:
            entry.waiting += 1
            try:
                while True:
                    if entry.state is ModelState.LOADED:
                        assert entry.engine is not None
                        entry.in_flight += 1
                        entry.last_used = self._clock()
                        return Lease(self, entry, entry.engine)
                    if entry.state is ModelState.FAILED and attempt == entry.attempts:
                        raise InternalError(entry.failure or f"could not load {entry.name}",
                                            code="model_load_failed")
                    if entry.state in (ModelState.UNLOADED, ModelState.FAILED):
                        if self._make_room(entry):
                            self._begin_load(entry)
                    if entry.state is ModelState.LOADING and attempt is None:
                        attempt = entry.attempts
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise self._not_ready(entry)
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except TimeoutError:
                        raise self._not_ready(entry) from None
            finally:
                entry.waiting -= 1

    def _not_ready(self, entry: ModelEntry) -> ServiceUnavailable:
        if entry.state is ModelState.LOADING:
            why = "is still loading"
        else:
            why = "is waiting for room: the loaded models are busy or pinned"
        error = ServiceUnavailable(
            f"the model '{entry.name}' {why} after {self.catalog.load_timeout:g} s; "
            "retry shortly", code="model_not_ready")
        error.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return error

    async def _release(self, entry: ModelEntry) -> None:
        async with self._changed:
            entry.in_flight -= 1
            entry.last_used = self._clock()
            if entry.in_flight == 0 and self.catalog.keep_alive == 0:
                self._unload_idle(0.0)
            self._changed.notify_all()

    # -- making room ----------------------------------------------------------------------

    def _make_room(self, entry: ModelEntry) -> bool:
        """True if ``entry`` fits now; otherwise begin unloading the least recently used
        idle models that make it fit (the caller waits for them), and return False."""
        occupying = [e for e in self.entries if e.occupies]
        if self._fits(entry, occupying):
            return True
        idle = sorted((e for e in occupying if self._evictable(e)), key=lambda e: e.last_used)
        chosen: list[ModelEntry] = []
        for candidate in idle:
            chosen.append(candidate)
            if self._fits(entry, [e for e in occupying if e not in chosen]):
                for victim in chosen:
                    log.info("unloading model %s to make room for %s", victim.name, entry.name)
                    self._begin_unload(victim)
                break
        return False

    def _fits(self, entry: ModelEntry, occupying: list[ModelEntry]) -> bool:
        limit, budget = self.catalog.max_loaded_models, self.catalog.memory_budget
        if limit is not None and len(occupying) + 1 > limit:
            return False
        used = sum(e.spec.memory_bytes for e in occupying)
        return budget is None or used + entry.spec.memory_bytes <= budget

    @staticmethod
    def _evictable(entry: ModelEntry) -> bool:
        return (entry.state is ModelState.LOADED and not entry.spec.pinned and not entry.given
                and entry.in_flight == 0 and entry.waiting == 0)

    # -- loading and unloading ------------------------------------------------------------

    def _begin_load(self, entry: ModelEntry) -> asyncio.Task[None]:
        entry.state, entry.failure = ModelState.LOADING, None
        entry.attempts += 1
        task = asyncio.get_running_loop().create_task(self._load(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _load(self, entry: ModelEntry) -> None:
        path = entry.spec.engine.model_path
        started = time.monotonic()
        engine = entry.engine
        try:
            if engine is None:
                assert self._factory is not None
                engine = entry.engine = self._factory(entry.spec.engine)
            await engine.start()
            await engine.wait_ready()
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            if path and path not in reason:
                reason = f"could not load {path}: {reason}"
            log.error("model %s: %s", entry.name, reason)
            if engine is not None and not entry.given:
                await _stop_quietly(engine)
            async with self._changed:
                entry.state, entry.failure = ModelState.FAILED, reason
                entry.load_failures += 1
                if not entry.given:
                    entry.engine = None
                self._changed.notify_all()
            return
        log.info("model %s loaded in %.2f s", entry.name, time.monotonic() - started)
        async with self._changed:
            entry.state = ModelState.LOADED
            entry.loads += 1
            entry.last_used = self._clock()
            self._changed.notify_all()

    def _begin_unload(self, entry: ModelEntry) -> asyncio.Task[None]:
        entry.state = ModelState.UNLOADING
        task = asyncio.get_running_loop().create_task(self._unload(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _unload(self, entry: ModelEntry) -> None:
        engine = entry.engine
        if engine is not None:
            engine.drain()
            await _stop_quietly(engine)
        async with self._changed:
            entry.engine = None
            entry.state = ModelState.UNLOADED
            entry.unloads += 1
            self._changed.notify_all()
        log.info("model %s unloaded", entry.name)

    def _unload_idle(self, keep_alive: float) -> list[asyncio.Task[None]]:
        now = self._clock()
        return [self._begin_unload(e) for e in self.entries
                if self._evictable(e) and now - e.last_used >= keep_alive]

    async def reap(self) -> list[str]:
        """Unload the models idle longer than the keep-alive; return their names once they
        are unloaded."""
        if self.catalog.keep_alive < 0:
            return []
        async with self._changed:
            tasks = self._unload_idle(self.catalog.keep_alive)
            names = [e.name for e in self.entries if e.state is ModelState.UNLOADING]
        await asyncio.gather(*tasks)
        return names

    async def _reap_forever(self) -> None:
        interval = min(max(self.catalog.keep_alive / 4, 0.5), 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception:  # the next round tries again; serving goes on
                log.exception("could not unload idle models")

    # -- the server's life ------------------------------------------------------------------

    async def start(self) -> None:
        """Begin loading the default and the pinned models; start the keep-alive reaper."""
        async with self._changed:
            for spec in self.catalog.eager:
                entry = self._by_name[spec.name]
                if self._make_room(entry):
                    self._startup.append(self._begin_load(entry))
        if self.catalog.keep_alive >= 0 and len(self.entries) > 1:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def wait_ready(self) -> None:
        """Return once the start-up models are loaded; ``ConfigError`` if one cannot be."""
        await asyncio.gather(*self._startup, return_exceptions=True)
        for entry in self.entries:
            if entry.spec in self.catalog.eager and entry.state is ModelState.FAILED:
                raise ConfigError(entry.failure or f"could not load {entry.name}")

    def drain(self) -> None:
        """Shutting down: the loaded engines take no new requests."""
        for entry in self.entries:
            if entry.engine is not None:
                entry.engine.drain()

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self._tasks):
            task.cancel()
        for entry in self.entries:
            if entry.engine is not None:
                await _stop_quietly(entry.engine)
                if not entry.given:
                    entry.engine = None
            entry.state = ModelState.UNLOADED


async def _stop_quietly(engine: Engine) -> None:
    try:
        await engine.stop()
    except Exception:
        log.exception("could not stop an engine cleanly")
