"""The usage ledger: one SQLite row per finished request, committed as it finishes.

SQLite in WAL mode with one transaction per request: a crash or a kill loses no row that was
committed (``synchronous=NORMAL`` trades only durability across a power cut). The server
writes from a thread of the ledger's own, so a slow disk never holds up the event loop;
``insieme usage`` reads the totals.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from pathlib import Path

from insieme.errors import ConfigError

log = logging.getLogger("insieme.ledger")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    completion_id TEXT,
    key_name TEXT,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    started_at REAL NOT NULL,        -- unix seconds
    finished_at REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    status INTEGER NOT NULL,
    finish_reason TEXT
);
CREATE INDEX IF NOT EXISTS requests_finished_at ON requests (finished_at);
"""


def default_ledger_path() -> Path:
    """``$INSIEME_USAGE_DB``, else ``$XDG_DATA_HOME/insieme/usage.sqlite3``."""
    if os.environ.get("INSIEME_USAGE_DB"):
        return Path(os.environ["INSIEME_USAGE_DB"])
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "insieme" / "usage.sqlite3"


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """What one finished request used; the columns of the ``requests`` table, in order."""

    request_id: str
    completion_id: str | None
    key_name: str | None
    model: str
    route: str
    started_at: float
    finished_at: float
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    status: int
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class UsageTotals:
    key_name: str | None
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_COLUMNS = ", ".join(f.name for f in fields(UsageEntry))
_INSERT = f"INSERT INTO requests ({_COLUMNS}) VALUES ({', '.join('?' * len(fields(UsageEntry)))})"


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"usage ledger {path}: {exc}") from exc
    return db


class UsageLedger:
    """Append-only writer; each entry is its own committed transaction, written in order by
    the ledger's thread. ``record`` only queues the entry."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = _connect(self.path)
        self._queue: queue.Queue[UsageEntry | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write, name="insieme-ledger", daemon=True)
        self._writer.start()

    def record(self, entry: UsageEntry) -> None:
        if self._db is None:
            log.warning("usage ledger closed; lost the record of %s", entry.request_id)
            return
        self._queue.put(entry)

    def flush(self) -> None:
        """Wait until every entry recorded so far is committed."""
        self._queue.join()

    def _write(self) -> None:
        db = self._db
        assert db is not None
        while (entry := self._queue.get()) is not None:
            try:
                db.execute(_INSERT, astuple(entry))  # autocommit: one transaction
            except sqlite3.Error:
                log.exception("could not record the usage of %s", entry.request_id)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def close(self) -> None:
        """Commit what is queued, fold the WAL into the database file and close it."""
        if self._db is None:
            return
        self._queue.put(None)
        self._writer.join()
        db, self._db = self._db, None
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()


def usage_totals(
    path: str | Path, *, key: str | None = None, since: datetime | None = None
) -> list[UsageTotals]:
    """Totals per key and model, optionally for one key and from a date on."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no usage ledger at {path}")
    where: list[str] = []
    params: list[object] = []
    if key is not None:
        where.append("key_name = ?")
        params.append(key)
    if since is not None:
        where.append("finished_at >= ?")
        params.append(since.timestamp())
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    db = _connect(path)
    try:
        rows = db.execute(
            "SELECT key_name, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
            f"SUM(cached_tokens) FROM requests {clause} GROUP BY key_name, model "
            "ORDER BY key_name, model", params).fetchall()
    finally:
        db.close()
    return [UsageTotals(*row) for row in rows]
