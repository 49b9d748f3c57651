"""``insieme keys new``: the entry goes to stdout (into the keys file), the secret never does."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from insieme.api.keys import KeyRing, load_keys_file
from insieme.cli import main

SECRET = re.compile(r"sk-[A-Za-z0-9_-]{20,}")


def test_keys_new_appended_to_a_keys_file_holds_no_secret(tmp_path: Path) -> None:
    """What ``insieme keys new alice ... >> keys.toml`` does, as the README says to run it."""
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.bob]\nsha256 = "' + "0" * 64 + '"\n')
    with keys.open("a") as out:
        done = subprocess.run(
            [sys.executable, "-m", "insieme", "keys", "new", "alice",
             "--requests-per-minute", "60"],
            stdout=out, stderr=subprocess.PIPE, text=True, check=True,
        )
    text = keys.read_text()
    assert SECRET.search(text) is None, text
    found = SECRET.findall(done.stderr)
    assert len(found) == 1, done.stderr
    secret = found[0]
    assert secret not in text
    assert {k.name: k.requests_per_minute for k in load_keys_file(keys)} == {
        "bob": None, "alice": 60}
    ring = KeyRing.from_config(None, str(keys))
    assert ring.authenticate(f"Bearer {secret}").name == "alice"  # type: ignore[union-attr]
    assert ring.authenticate("Bearer sk-not-the-secret") is None


def test_keys_new_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret_file = tmp_path / "alice.secret"
    assert main(["keys", "new", "al ice", "--secret-file", str(secret_file)]) == 0
    out, err = capsys.readouterr()
    secret = secret_file.read_text().strip()
    assert SECRET.fullmatch(secret)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret not in out and secret not in err
    keys = tmp_path / "keys.toml"
    keys.write_text(out)
    ring = KeyRing.from_config(None, str(keys))
    assert ring.authenticate(f"Bearer {secret}").name == "al ice"  # type: ignore[union-attr]

    # An existing file is never overwritten: that would lose a key already handed out.
    assert main(["keys", "new", "bob", "--secret-file", str(secret_file)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "exists" in err
    assert secret_file.read_text().strip() == secret
