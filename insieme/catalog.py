"""The models one server serves: ``--model`` given several times, or ``[models.NAME]`` tables in
the config file, and the policy that loads and unloads them (``insieme.api.registry``).

::

    keep-alive = "10m"
    max-loaded-models = 2

    [models.chat]
    served-model-name = ["HuggingFaceTB/SmolLM2-135M-Instruct", "smol"]
    pinned = true

    [models.small]
    model = "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"
    max-model-len = 2048
    max-num-seqs = 4

A table's engine settings start from the flags' (threads, batching, speculation...) and
override the few a table names. With nothing named, the bundled model is the one model.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from insieme.config import BUNDLED_MODEL_NAME, EngineConfig, bundled_model_path
from insieme.errors import ConfigError
from insieme.gguf_info import context_length, estimate_bytes, read_shape

# A model's task, and the ``type`` /v1/models gives it (Together's names).
TASK_TYPES = {"chat": "chat", "embed": "embedding", "rerank": "rerank"}
DEFAULT_KEEP_ALIVE = 300.0  # seconds, as Ollama
DEFAULT_LOAD_TIMEOUT = 120.0
_TABLE_KEYS = ("model", "served-model-name", "max-model-len", "max-num-seqs", "threads",
               "task", "pinned")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One registered model: the names it answers to (the first is reported), its engine
    settings, what it is for, and what it is estimated to take in memory."""

    names: tuple[str, ...]
    engine: EngineConfig
    task: str = "chat"
    pinned: bool = False  # never unloaded
    memory_bytes: int = 0  # weights + KV cache; 0: unknown
    context_length: int = 0  # before it is loaded; 0: unknown

    def __post_init__(self) -> None:
        if not self.names or not all(self.names):
            raise ConfigError("a model needs at least one non-empty served name")
        if self.task not in TASK_TYPES:
            raise ConfigError(f"model {self.names[0]}: task must be one of "
                              f"{', '.join(TASK_TYPES)}, not {self.task!r}")

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def model_type(self) -> str:
        return TASK_TYPES[self.task]


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    """Every model, and the load/unload policy. The first model is the default one: it is
    loaded at start-up with every pinned model."""

    models: tuple[ModelSpec, ...]
    keep_alive: float = DEFAULT_KEEP_ALIVE  # seconds idle before unloading; < 0: never
    max_loaded_models: int | None = None
    memory_budget: int | None = None  # bytes
    load_timeout: float = DEFAULT_LOAD_TIMEOUT  # how long a request waits for its model

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no model to serve")
        seen: dict[str, str] = {}
        for spec in self.models:
            for name in spec.names:
                if name in seen:
                    raise ConfigError(f"the served name '{name}' is given to two models")
                seen[name] = spec.name
        if self.max_loaded_models is not None and self.max_loaded_models < 1:
            raise ConfigError("--max-loaded-models must be at least 1")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ConfigError("--memory-budget must be more than 0")
        if self.load_timeout <= 0:
            raise ConfigError("--model-load-timeout must be more than 0 seconds")
        eager = self.eager
        if self.max_loaded_models is not None and len(eager) > self.max_loaded_models:
            raise ConfigError(f"{len(eager)} models must stay loaded (the first and the "
                              f"pinned ones), more than --max-loaded-models "
                              f"{self.max_loaded_models}")
        budget = self.memory_budget
        if budget is not None:
            for spec in self.models:
                if spec.memory_bytes > budget:
                    raise ConfigError(f"model {spec.name} needs about {_mib(spec.memory_bytes)}, "
                                      f"more than --memory-budget {_mib(budget)}")
            if sum(spec.memory_bytes for spec in eager) > budget:
                raise ConfigError(f"the models loaded at start ({', '.join(s.name for s in eager)}"
                                  f") need more than --memory-budget {_mib(budget)}")

    @property
    def default(self) -> ModelSpec:
        return self.models[0]

    @property
    def eager(self) -> tuple[ModelSpec, ...]:
        """The models loaded at start: the default and the pinned ones."""
        return tuple(s for i, s in enumerate(self.models) if i == 0 or s.pinned)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


# -- flags ------------------------------------------------------------------------------

class RepeatedModel(argparse.Action):
    """``--model`` given several times: a list. The first on the command line replaces what
    the config file gave, so flags still win over the file."""

    many = True  # config_file: the key takes one value or a list

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest, None)
        fresh = current is None or current is self.default
        setattr(namespace, self.dest, [*([] if fresh else current), values])


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The registry's flags on ``insieme serve``."""
    group = parser.add_argument_group("several models (see also [models.NAME] in --config)")
    group.add_argument("--keep-alive", type=duration, default=DEFAULT_KEEP_ALIVE,
                       metavar="DURATION",
                       help="unload a model idle this long (30s, 5m, 1h; 0: when its last "
                       "request ends; -1: never; default: 5m)")
    group.add_argument("--max-loaded-models", type=int, default=None, metavar="N",
                       help="models loaded at once; loading one more unloads the least "
                       "recently used idle one (default: no limit)")
    group.add_argument("--memory-budget", type=byte_size, default=None, metavar="SIZE",
                       help="memory the loaded models may take, estimated from the GGUF file "
                       "and the KV cache (e.g. 8GiB; default: no limit)")
    group.add_argument("--model-load-timeout", type=float, default=DEFAULT_LOAD_TIMEOUT,
                       metavar="SECONDS",
                       help="how long a request waits for its model to load, then 503 with "
                       "Retry-After (default: %(default)s)")
    parser.set_defaults(model_tables=())


def duration(text: str) -> float:
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(text))
    if match is None:
        raise argparse.ArgumentTypeError(f"a duration (30s, 5m, 1h, -1), not {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    return float(match.group(1)) * scale


def byte_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", str(text).lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"a size (800MB, 8GiB), not {text!r}")
    unit = (match.group(2) or "b").rstrip("b") or "b"
    base = 1024 if unit.endswith("i") else 1000
    power = "bkmgt".index(unit[0])
    return int(float(match.group(1)) * base**power)


# -- [models.NAME] tables ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ModelTable:
    """One ``[models.NAME]`` table, checked; what it leaves out comes from the flags."""

    name: str
    model: str | None = None
    served_model_name: tuple[str, ...] = ()
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    threads: int | None = None
    task: str = "chat"
    pinned: bool = False


def model_tables(path: object, data: object) -> tuple[ModelTable, ...]:
    """The ``models`` table of a config file as ``ModelTable``s; a bad key or value is a
    ``ConfigError`` naming the file, the table and the key."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"--config {path}: 'models' must hold [models.NAME] tables")
    return tuple(_table(f"--config {path}: [models.{name}]", name, value)
                 for name, value in data.items())


def _table(where: str, name: str, value: object) -> ModelTable:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of keys ({', '.join(_TABLE_KEYS)})")
    fields: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = raw_key.replace("_", "-")
        if key not in _TABLE_KEYS:
            raise ConfigError(f"{where}: unknown key '{raw_key}' (a model table takes "
                              f"{', '.join(_TABLE_KEYS)})")
        dest = key.replace("-", "_")
        if key in ("model", "task"):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{where}: '{key}' must be a non-empty string")
            if key == "task" and item not in TASK_TYPES:
                raise ConfigError(f"{where}: 'task' must be one of {', '.join(TASK_TYPES)}")
        elif key == "served-model-name":
            item = [item] if isinstance(item, str) else item
            if not isinstance(item, list) or not item or not all(
                    isinstance(n, str) and n for n in item):
                raise ConfigError(f"{where}: '{key}' must be a name or a list of names")
            item = tuple(item)
        elif key == "pinned":
            if not isinstance(item, bool):
                raise ConfigError(f"{where}: 'pinned' must be true or false")
        elif isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"{where}: '{key}' must be an integer")
        fields[dest] = item
    return ModelTable(name=name, **fields)


# -- the catalogue from the flags -----------------------------------------------------------

def catalog_config(args: argparse.Namespace, engine: EngineConfig) -> CatalogConfig:
    """Every model the serve flags and the config file name; ``engine`` (from the flags) is
    the base of each model's engine settings."""
    paths: list[str] = list(args.model or [])
    tables: tuple[ModelTable, ...] = tuple(args.model_tables or ())
    names: list[str] = list(args.served_model_name or [])
    specs: list[ModelSpec] = []
    if names and tables and not paths:
        raise ConfigError("--served-model-name names a --model; a [models.NAME] table has "
                          "its own served-model-name")
    if paths or not tables:
        if len(paths) > 1 and names and len(names) != len(paths):
            raise ConfigError(f"--served-model-name: {len(paths)} models need one name each "
                              f"(or none); for aliases, use [models.NAME] tables")
        for i, path in enumerate(paths or [None]):
            own: tuple[str, ...]
            if len(paths) > 1:
                own = (names[i],) if names else (os.path.basename(str(path)),)
            else:
                own = tuple(names) or (BUNDLED_MODEL_NAME if path is None
                                       else os.path.basename(str(path)),)
            config = replace(engine, model_path=path or str(bundled_model_path()))
            specs.append(_spec(own, config))
    for table in tables:
        where = f"[models.{table.name}]"
        try:
            config = replace(engine, model_path=table.model or str(bundled_model_path()),
                             **{key: value for key, value in (
                                 ("max_model_len", table.max_model_len),
                                 ("max_num_seqs", table.max_num_seqs),
                                 ("n_threads", table.threads)) if value is not None})
            specs.append(_spec(table.served_model_name or (table.name,), config,
                               task=table.task, pinned=table.pinned))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    if len(specs) == 1:
        specs[0] = replace(specs[0], pinned=True)  # the only model: nothing to make room for
    return CatalogConfig(
        models=tuple(specs), keep_alive=args.keep_alive,
        max_loaded_models=args.max_loaded_models, memory_budget=args.memory_budget,
        load_timeout=args.model_load_timeout)


def _spec(names: tuple[str, ...], config: EngineConfig, **kwargs: Any) -> ModelSpec:
    try:
        shape = read_shape(config.model_path)
    except ConfigError:  # not GGUF (a vLLM folder or hub id, or broken): the files' size
        return ModelSpec(names, config, memory_bytes=_files_size(config.model_path), **kwargs)
    return ModelSpec(names, config, memory_bytes=estimate_bytes(config, shape),
                     context_length=context_length(config, shape), **kwargs)


def _files_size(path: str) -> int:
    """Bytes of a model file, or of every file in a model folder; 0 for a hub id."""
    where = Path(path)
    if where.is_dir():
        return sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    return where.stat().st_size if where.is_file() else 0
