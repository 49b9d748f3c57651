"""What a GGUF file's header says about the memory its model will take, read without loading it.

The model registry decides what fits in ``--memory-budget`` before it loads anything, so it
needs the numbers llama.cpp will allocate: the weights (about the file's size, mapped) and the
KV cache (2 x layers x KV heads x head size x cells, in f16). The header is a list of typed
key/value pairs; only a few integers are kept, the rest (the tokenizer's arrays) is skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from insieme.config import MAX_DEFAULT_MODEL_LEN, EngineConfig
from insieme.errors import ConfigError

_MAGIC = b"GGUF"
# GGUF value types: their struct formats (8 is a string, 9 an array).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_STRING, _ARRAY = 8, 9
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV type, f16
_LONGEST_STRING = 1 << 24  # chat templates run to tens of KB


@dataclass(frozen=True, slots=True)
class GGUFShape:
    """The few header values that size a model in memory."""

    file_bytes: int
    n_layer: int = 0
    n_embd: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    n_ctx_train: int = 0
    key_length: int = 0  # per head; 0: n_embd / n_head
    value_length: int = 0

    def kv_bytes_per_cell(self) -> int:
        if not (self.n_layer and self.n_head):
            return 0
        head = self.n_embd // self.n_head
        kv_heads = self.n_head_kv or self.n_head
        per_layer = kv_heads * ((self.key_length or head) + (self.value_length or head))
        return self.n_layer * per_layer * KV_BYTES_PER_VALUE


def read_shape(path: str | Path) -> GGUFShape:
    """The header of the GGUF file at ``path``; ``ConfigError`` naming the file if it is not
    one. A file whose header lacks the sizes gives zeros (its estimate is then the file)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            if f.read(4) != _MAGIC:
                raise ConfigError(f"{path} is not a GGUF file")
            version, _tensors, count = struct.unpack("<IQQ", _read(f, 20))
            if version < 2:
                raise ConfigError(f"{path}: GGUF version {version} is too old")
            values = dict(_entries(f, count))
            size = path.stat().st_size
    except (OSError, struct.error, UnicodeDecodeError, OverflowError, ValueError) as exc:
        raise ConfigError(f"could not read the GGUF header of {path}: {exc}") from exc
    arch = values.get("general.architecture")

    def number(key: str) -> int:
        value = values.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int | float) else 0

    return GGUFShape(
        file_bytes=size, n_layer=number("block_count"), n_embd=number("embedding_length"),
        n_head=number("attention.head_count"), n_head_kv=number("attention.head_count_kv"),
        n_ctx_train=number("context_length"), key_length=number("attention.key_length"),
        value_length=number("attention.value_length"))


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise struct.error("the file ends inside its header")
    return data


def _entries(f: BinaryIO, count: int) -> list[tuple[str, object]]:
    found = []
    for _ in range(count):
        key = _string(f)
        (kind,) = struct.unpack("<I", _read(f, 4))
        found.append((key, _value(f, kind)))
    return found


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _read(f, 8))
    if length > _LONGEST_STRING:  # a corrupt header: never allocate what it claims
        raise struct.error(f"a header string claims {length} bytes")
    return _read(f, length).decode()


def _value(f: BinaryIO, kind: int) -> object:
    if kind in _SCALARS:
        fmt = "<" + _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, length = struct.unpack("<IQ", _read(f, 12))
        if item in _SCALARS:  # skipped whole: nothing sized by an array is needed
            f.seek(length * struct.calcsize("<" + _SCALARS[item]), 1)
        else:
            for _ in range(length):
                _value(f, item)
        return None
    raise struct.error(f"unknown GGUF value type {kind}")


def context_length(config: EngineConfig, shape: GGUFShape) -> int:
    """The context a request gets, as the llama engine will set it."""
    return config.max_model_len or min(shape.n_ctx_train or MAX_DEFAULT_MODEL_LEN,
                                       MAX_DEFAULT_MODEL_LEN)


def estimate_bytes(config: EngineConfig, shape: GGUFShape) -> int:
    """Weights plus KV cache for ``config``'s context shape (compute buffers not counted)."""
    per_sequence = context_length(config, shape)
    if config.kv_unified:
        cells = config.kv_cache_tokens or max(per_sequence, 1024 * config.max_num_seqs)
    else:
        cells = per_sequence * config.max_num_seqs
    return shape.file_bytes + cells * shape.kv_bytes_per_cell()
