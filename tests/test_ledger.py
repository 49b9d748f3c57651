"""The usage ledger: one committed row per finished request, which a kill cannot undo, and
`insieme usage` totals over it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from insieme.api.keys import hash_key
from insieme.cli import main
from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from insieme.errors import ConfigError
from insieme.ledger import UsageEntry, UsageLedger, usage_totals
from tests.conftest import MODEL, InProcessServer


def entry(request_id: str, key: str | None, prompt: int, completion: int,
          finished_at: float = 1_700_000_000.0) -> UsageEntry:
    return UsageEntry(request_id=request_id, completion_id=f"cmpl-{request_id}", key_name=key,
                      model=MODEL, route="/v1/completions", started_at=finished_at - 1,
                      finished_at=finished_at, prompt_tokens=prompt,
                      completion_tokens=completion, cached_tokens=0, status=200,
                      finish_reason="stop")


def test_totals_by_key_and_date(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    ledger = UsageLedger(path)
    day = datetime(2025, 3, 1).timestamp()
    ledger.record(entry("a1", "alice", 10, 5, day))
    ledger.record(entry("a2", "alice", 20, 7, day + 86400 * 2))
    ledger.record(entry("b1", "bob", 3, 1, day))
    ledger.close()
    totals = {t.key_name: t for t in usage_totals(path)}
    assert totals["alice"].requests == 2 and totals["alice"].total_tokens == 42
    assert totals["bob"].prompt_tokens == 3
    later = usage_totals(path, key="alice", since=datetime(2025, 3, 2))
    assert [(t.requests, t.prompt_tokens) for t in later] == [(1, 20)]
    with pytest.raises(ConfigError):
        usage_totals(tmp_path / "missing.sqlite3")


WRITER = """
import os, sys
from tests.test_ledger import entry
from insieme.ledger import UsageLedger
ledger = UsageLedger(sys.argv[1])
for i in range(50):
    ledger.record(entry(f"r{i}", "alice", 1, 1))
ledger.flush()
print("committed", flush=True)
os.kill(os.getpid(), 9)  # no close, no checkpoint
"""


def test_a_kill_loses_no_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    done = subprocess.run([sys.executable, "-c", WRITER, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "committed" in done.stdout
    assert [t.requests for t in usage_totals(path)] == [50]


def test_server_records_each_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "usage.sqlite3"
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.alice]\nsha256 = "{hash_key("a")}"\n'
                    f'[keys.bob]\nsha256 = "{hash_key("b")}"\n')
    config = ServerConfig(api_keys_file=str(keys), usage_db=str(path))
    sent = {"alice": 0, "bob": 0}
    with InProcessServer(FakeEngine(), config) as srv:
        for name, secret, stream in (("alice", "a", False), ("alice", "a", True),
                                     ("bob", "b", False)):
            response = httpx.post(
                f"{srv.root}/v1/completions", headers={"Authorization": f"Bearer {secret}"},
                json={"model": MODEL, "prompt": "count me", "max_tokens": 4, "stream": stream})
            assert response.status_code == 200
            sent[name] += 1
        # Refused requests ran nothing and are not in the ledger.
        assert httpx.post(f"{srv.root}/v1/completions", json={"model": MODEL}).status_code == 401
        # Committed as each finishes (by the ledger's thread), before the server stops.
        deadline = time.monotonic() + 10
        while ({t.key_name: t.requests for t in usage_totals(path)} != sent
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert {t.key_name: t.requests for t in usage_totals(path)} == sent
    totals = {t.key_name: t for t in usage_totals(path)}
    assert totals["alice"].prompt_tokens == 2 * len("count me")
    assert totals["alice"].completion_tokens == 8

    assert main(["usage", "--usage-db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "bob" in out and out.splitlines()[-1].startswith("all")
    assert main(["usage", "--usage-db", str(path), "--key", "bob"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].split()[0] == "bob" and lines[1].split()[2] == "1"
    tomorrow = datetime.fromtimestamp(time.time() + 86400).date().isoformat()
    assert main(["usage", "--usage-db", str(path), "--since", tomorrow]) == 0
    assert "no requests recorded" in capsys.readouterr().out
    assert main(["usage", "--usage-db", str(path), "--since", "yesterday-ish"]) == 2


def test_recording_never_waits_for_the_disk(tmp_path: Path) -> None:
    """The gate records a request on the event loop: the insert must not wait there for a
    busy database (before, record() held the loop for up to SQLite's 5 s busy timeout)."""
    path = tmp_path / "usage.sqlite3"
    ledger = UsageLedger(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the database
    started = time.monotonic()
    ledger.record(entry("slow", "alice", 1, 1))
    assert time.monotonic() - started < 0.5
    blocker.execute("COMMIT")
    blocker.close()
    ledger.flush()
    ledger.close()
    assert [t.requests for t in usage_totals(path)] == [1]
