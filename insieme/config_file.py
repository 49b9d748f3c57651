"""``insieme serve --config insieme.toml``: the same keys as the flags, flags win.

Keys are the flag names without the dashes in front (``max-num-seqs = 8``; underscores work
too). Values have the flag's type: strings, integers, numbers, ``true`` for on/off flags and
lists for flags that take several values::

    host = "0.0.0.0"
    port = 8000
    served-model-name = ["HuggingFaceTB/SmolLM2-135M-Instruct", "smol"]
    api-keys-file = "/etc/insieme/keys.toml"
    shutdown-grace = 30
    no-prefix-caching = true
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from insieme.catalog import model_tables
from insieme.errors import ConfigError

# Flags that make no sense in a file.
_NOT_IN_FILE = {"help", "config"}


def load_config_file(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Parser defaults from a TOML file, checked against ``parser``'s own flags."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {path}: {exc}") from exc
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    defaults: dict[str, Any] = {}
    for raw_key, value in data.items():
        if raw_key == "models":  # [models.NAME] tables: insieme.catalog
            defaults["model_tables"] = model_tables(path, value)
            continue
        dest = raw_key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest in _NOT_IN_FILE:
            raise ConfigError(f"--config {path}: unknown key '{raw_key}'")
        defaults[dest] = _convert(path, raw_key, value, action)
    return defaults


def _convert(path: str | Path, key: str, value: Any, action: argparse.Action) -> Any:
    where = f"--config {path}: '{key}'"
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if action.nargs in ("+", "*") or getattr(action, "many", False):
        values = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not values:
            raise ConfigError(f"{where} needs at least one value")
        return [_scalar(where, v, action) for v in values]
    return _scalar(where, value, action)


def _scalar(where: str, value: Any, action: argparse.Action) -> Any:
    if isinstance(value, dict | list) or isinstance(value, bool):
        raise ConfigError(f"{where} must be a single {_kind(action)}")
    convert = action.type if callable(action.type) else str
    try:
        converted = convert(value if isinstance(value, str) else str(value))
    except argparse.ArgumentTypeError as exc:  # a type with its own message
        raise ConfigError(f"{where} must be {exc}") from exc
    except (TypeError, ValueError) as exc:
        kind = _kind(action)
        raise ConfigError(f"{where} must be {'an' if kind[0] == 'i' else 'a'} {kind}") from exc
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}")
    return converted


def _kind(action: argparse.Action) -> str:
    if action.type is int:
        return "integer"
    return "number" if action.type is float else "string"
