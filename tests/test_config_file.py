"""`insieme serve --config insieme.toml`: the flags' own names and types; flags win."""

from __future__ import annotations

from pathlib import Path

import pytest

from insieme.api.keys import hash_key
from insieme.cli import build_parser, main, serve_parser, server_config
from insieme.config_file import load_config_file
from insieme.errors import ConfigError


def config_from(argv: list[str]) -> object:
    args = build_parser().parse_args(argv)
    if args.config:
        defaults = load_config_file(args.config, serve_parser())
        args = build_parser(defaults).parse_args(argv)
    return server_config(args)


def test_file_values_and_flag_overrides(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.a]\nsha256 = "{hash_key("a")}"\n')
    path = tmp_path / "insieme.toml"
    path.write_text(f"""
host = "0.0.0.0"
port = 9100
served-model-name = ["one", "two"]
api-keys-file = "{keys}"
max_num_seqs = 4
no-prefix-caching = true
shutdown-grace = 12.5
request-timeout = 30
max-tokens-cap = 256
log-format = "json"
usage-db = "{tmp_path / 'u.sqlite3'}"
""")
    config = config_from(["serve", "--config", str(path)])
    assert config.host == "0.0.0.0" and config.port == 9100  # type: ignore[attr-defined]
    assert config.served_model_names == ("one", "two")  # type: ignore[attr-defined]
    assert config.engine.max_num_seqs == 4  # type: ignore[attr-defined]
    assert config.engine.enable_prefix_caching is False  # type: ignore[attr-defined]
    assert config.shutdown_grace == 12.5  # type: ignore[attr-defined]
    assert config.limits.request_timeout == 30.0  # type: ignore[attr-defined]
    assert config.default_max_tokens == 256  # type: ignore[attr-defined]
    assert config.log_format == "json"  # type: ignore[attr-defined]
    flagged = config_from(["serve", "--config", str(path), "--port", "9200",
                           "--max-num-seqs", "2", "--log-format", "text"])
    assert flagged.port == 9200 and flagged.engine.max_num_seqs == 2  # type: ignore[attr-defined]
    assert flagged.log_format == "text" and flagged.host == "0.0.0.0"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "message"), [
    ("prot = 1", "unknown key 'prot'"),
    ("config = 'x.toml'", "unknown key 'config'"),
    ("port = 'eighty'", "'port' must be an integer"),
    ("port = 80.5", "'port' must be an integer"),
    ("no-prefix-caching = 'yes'", "true or false"),
    ("log-format = 'xml'", "must be one of text, json"),
    ("host = ['a']", "single string"),
    ("port = ", "--config"),
])
def test_bad_files(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "insieme.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_config_file(path, serve_parser())


def test_cli_reports_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from insieme.cli import main

    path = tmp_path / "insieme.toml"
    path.write_text("max-num-seqs = 0\n")
    assert main(["serve", "--config", str(path), "--no-usage-db"]) == 2
    assert "--max-num-seqs" in capsys.readouterr().err


def test_help_states_the_real_context_cap(capsys: pytest.CaptureFixture[str]) -> None:
    from insieme.config import MAX_DEFAULT_MODEL_LEN

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"at most {MAX_DEFAULT_MODEL_LEN}" in help_text
