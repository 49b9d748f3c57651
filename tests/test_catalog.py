"""The models a server is told to serve: `--model` several times, `[models.NAME]` tables in the
config file (checked key by key), the policy flags, and the GGUF estimate behind
--memory-budget."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from insieme.catalog import CatalogConfig, byte_size, catalog_config, duration
from insieme.cli import build_parser, engine_config, serve_parser, server_config
from insieme.config import BUNDLED_MODEL_NAME, bundled_model_path
from insieme.config_file import load_config_file
from insieme.errors import ConfigError
from insieme.gguf_info import estimate_bytes, read_shape


def parse(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(["serve", *argv])
    if args.config:
        args = build_parser(load_config_file(args.config, serve_parser())).parse_args(
            ["serve", *argv])
    return args


def catalog(argv: list[str]) -> CatalogConfig:
    return catalog_config(parse(argv), engine_config(parse(argv)))


def test_nothing_named_serves_the_bundled_model_alone() -> None:
    models = catalog([])
    assert len(models.models) == 1
    only = models.default
    assert only.names == (BUNDLED_MODEL_NAME,) and only.pinned and only.task == "chat"
    assert only.engine.model_path == str(bundled_model_path())
    assert models.keep_alive == 300.0 and models.max_loaded_models is None


def test_model_given_several_times(tmp_path: Path) -> None:
    bundled = str(bundled_model_path())
    models = catalog(["--model", bundled, "--model", bundled, "--served-model-name", "a", "b",
                      "--max-loaded-models", "1", "--keep-alive", "90s"])
    assert [m.names for m in models.models] == [("a",), ("b",)]
    assert not any(m.pinned for m in models.models)
    assert models.max_loaded_models == 1 and models.keep_alive == 90.0
    assert server_config(parse(["--model", bundled, "--model", bundled, "--served-model-name",
                                "a", "b"])).served_model_names == ("a",)
    with pytest.raises(ConfigError, match="one name each"):
        catalog(["--model", bundled, "--model", bundled, "--served-model-name", "a"])


def test_model_tables_in_the_config_file(tmp_path: Path) -> None:
    bundled = bundled_model_path()
    path = tmp_path / "insieme.toml"
    path.write_text(f"""
threads = 2
max-loaded-models = 2
memory-budget = "8GiB"
keep-alive = "10m"

[models.chat]
served-model-name = ["org/chat", "chat"]
pinned = true

[models.small]
model = "{bundled}"
max-model-len = 512
max-num-seqs = 2
threads = 1

[models.embed]
task = "embed"
""")
    models = catalog(["--config", str(path)])
    chat, small, embed = models.models
    assert chat.names == ("org/chat", "chat") and chat.pinned
    assert chat.engine.n_threads == 2 and chat.engine.max_num_seqs == 16
    assert small.names == ("small",) and small.engine.max_model_len == 512
    assert small.engine.max_num_seqs == 2 and small.engine.n_threads == 1
    assert small.context_length == 512 and small.memory_bytes < chat.memory_bytes
    assert embed.task == "embed" and embed.model_type == "embedding"
    assert models.memory_budget == 8 * 2**30 and models.keep_alive == 600.0
    # A --model flag adds a model in front of the tables, and becomes the default.
    flagged = catalog(["--config", str(path), "--model", str(bundled)])
    assert [m.name for m in flagged.models] == [bundled.name, "org/chat", "small", "embed"]


@pytest.mark.parametrize(("table", "message"), [
    ("[models.a]\nmodle = 'x.gguf'", "[models.a]: unknown key 'modle'"),
    ("[models.a]\ntask = 'summarize'", "'task' must be one of chat, embed, rerank"),
    ("[models.a]\npinned = 'yes'", "'pinned' must be true or false"),
    ("[models.a]\nmax-model-len = '4k'", "'max-model-len' must be an integer"),
    ("[models.a]\nserved-model-name = []", "a name or a list of names"),
    ("[models.a]\nmodel = '/no/such.gguf'", "[models.a]: --model: no such file"),
    ("[models.a]\nmax-num-seqs = 0", "[models.a]: --max-num-seqs must be between"),
    ("models = 3", "'models' must hold [models.NAME] tables"),
    ("[models]\na = 3", "[models.a] must be a table"),
    ("[models.a]\n[models.b]\nserved-model-name = 'a'", "'a' is given to two models"),
    ("keep-alive = 'soon'", "'keep-alive' must be"),
])
def test_bad_model_tables_are_clear_errors(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "insieme.toml"
    path.write_text(table)
    with pytest.raises(ConfigError) as error:
        catalog(["--config", str(path)])
    assert message in str(error.value)
    assert str(path) in str(error.value) or "[models.a]" in str(error.value) or \
        "two models" in str(error.value)


def test_durations_and_sizes() -> None:
    assert duration("5m") == 300 and duration("-1") == -1 and duration("250ms") == 0.25
    assert byte_size("8GiB") == 8 * 2**30 and byte_size("800MB") == 800 * 10**6
    assert byte_size("1048576") == 2**20
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size("lots")


def test_the_estimate_reads_the_gguf_header(tmp_path: Path) -> None:
    shape = read_shape(bundled_model_path())
    # SmolLM2-135M: 30 layers, 3 KV heads of 64: 2 x 30 x 3 x 64 x 2 bytes a cell.
    assert (shape.n_layer, shape.n_head_kv, shape.n_embd // shape.n_head) == (30, 3, 64)
    assert shape.kv_bytes_per_cell() == 23040 and shape.n_ctx_train == 8192
    one = catalog(["--max-model-len", "1024", "--max-num-seqs", "1"]).default
    assert one.memory_bytes == shape.file_bytes + 1024 * 23040
    assert estimate_bytes(one.engine, shape) == one.memory_bytes
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"GGML" + bytes(64))
    with pytest.raises(ConfigError, match="not a GGUF file"):
        read_shape(not_gguf)
    corrupt = tmp_path / "corrupt.gguf"  # lengths that claim exabytes
    corrupt.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    with pytest.raises(ConfigError, match="could not read the GGUF header"):
        read_shape(corrupt)
