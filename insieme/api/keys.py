"""Named API keys and their per-minute limits.

``--api-keys-file`` is TOML. Each key is stored as the SHA-256 of its secret, never the
secret itself (``insieme keys new NAME`` makes a key and prints its entry)::

    [keys.alice]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    requests_per_minute = 60      # optional
    tokens_per_minute = 40000     # optional: prompt + completion tokens

A presented key is hashed and compared with every stored hash in constant time. ``--api-key``
adds one more key, named ``default``, without limits.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insieme.errors import ConfigError, RateLimitError

WINDOW_SECONDS = 60.0


def hash_key(secret: str) -> str:
    """The hex SHA-256 a keys file stores for ``secret``."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One named key: the hash of its secret and its optional limits."""

    name: str
    sha256: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


def load_keys_file(path: str | Path) -> list[ApiKey]:
    """Read a keys file; every mistake is a ``ConfigError`` that names the key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--api-keys-file {path}: {exc}") from exc
    table = data.get("keys")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"--api-keys-file {path}: expected one or more [keys.NAME] tables")
    return [_parse_key(path, name, entry) for name, entry in table.items()]


def _parse_key(path: str | Path, name: str, entry: Any) -> ApiKey:
    where = f"--api-keys-file {path}: [keys.{name}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(entry) - {"sha256", "requests_per_minute", "tokens_per_minute"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
        raise ConfigError(f"{where}: 'sha256' must be 64 hex digits (insieme keys new {name})")
    limits: dict[str, int | None] = {}
    for field in ("requests_per_minute", "tokens_per_minute"):
        value = entry.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ConfigError(f"{where}: '{field}' must be a positive integer")
        limits[field] = value
    return ApiKey(name=name, sha256=digest.lower(), **limits)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


class KeyRing:
    """The keys a server accepts; empty means authentication is off."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = list(keys)
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ConfigError("two API keys share a name")

    @classmethod
    def from_config(cls, api_key: str | None, keys_file: str | None) -> KeyRing:
        keys = load_keys_file(keys_file) if keys_file else []
        if api_key:
            keys.append(ApiKey(name="default", sha256=hash_key(api_key)))
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, authorization: str) -> ApiKey | None:
        """The key an ``Authorization: Bearer ...`` header presents, or None."""
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        digest = hash_key(secret.strip()).encode()
        found = None
        for key in self.keys:  # no early exit: every key costs the same comparison
            if hmac.compare_digest(digest, key.sha256.encode()):
                found = key
        return found


class Reservation:
    """Tokens a running request holds in its key's window: its prompt and all it may still
    generate; ``RateLimiter.settle`` turns it into what the request really used."""

    __slots__ = ("at", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens


class RateLimiter:
    """Sliding one-minute windows per key: requests when admitted, tokens as they are used.

    A request is admitted against its prompt plus every completion token it may produce
    (``max_tokens`` for each of its ``n`` choices, at most the key's whole minute), reserved
    in the window at once, so concurrent requests cannot overshoot the limit together; when
    it ends, the unused part is given back. A key over its tokens-per-minute gets 429 until
    enough of the last minute has passed.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[Reservation]] = {}

    def admit(self, key: ApiKey) -> None:
        """Count one request against ``key``; raise ``RateLimitError`` when over a limit."""
        now = self._clock()
        if key.tokens_per_minute is not None:
            self._check_tokens(key, 0, now)
        if key.requests_per_minute is not None:
            times = self._requests.setdefault(key.name, deque())
            while times and times[0] <= now - WINDOW_SECONDS:
                times.popleft()
            if len(times) >= key.requests_per_minute:
                wait = times[0] + WINDOW_SECONDS - now
                raise RateLimitError(
                    f"key '{key.name}' is over its limit of {key.requests_per_minute} "
                    "requests per minute", retry_after=math.ceil(wait))
            times.append(now)

    def reserve(self, key: ApiKey, prompt_tokens: int, max_completion: int) -> Reservation | None:
        """Admit a request against the key's tokens per minute and hold its tokens in the
        window (None when the key has no such limit); ``RateLimitError`` if it does not fit."""
        limit = key.tokens_per_minute
        if limit is None:
            return None
        if prompt_tokens > limit:
            raise RateLimitError(
                f"the prompt has {prompt_tokens} tokens, more than key '{key.name}' may use "
                f"in a minute ({limit})", retry_after=math.ceil(WINDOW_SECONDS))
        asking = min(prompt_tokens + max_completion, limit)
        now = self._clock()
        self._check_tokens(key, asking, now, prompt_tokens)
        reservation = Reservation(now, asking)
        self._tokens.setdefault(key.name, deque()).append(reservation)
        return reservation

    @staticmethod
    def settle(reservation: Reservation | None, used_tokens: int) -> None:
        """The request is over: its place in the window holds what it used, no more."""
        if reservation is not None:
            reservation.tokens = min(reservation.tokens, max(used_tokens, 0))

    def _check_tokens(self, key: ApiKey, asking: int, now: float, prompt_tokens: int = 0) -> None:
        """Raise unless the last minute leaves room for ``asking`` tokens (0: for any)."""
        assert key.tokens_per_minute is not None
        used = self._tokens.setdefault(key.name, deque())
        while used and used[0].at <= now - WINDOW_SECONDS:
            used.popleft()
        total = sum(r.tokens for r in used)
        excess = total - (key.tokens_per_minute - max(asking, 1))
        if excess <= 0:
            return
        freed, wait = 0, WINDOW_SECONDS
        for reservation in used:  # the moment enough of the window expires
            freed += reservation.tokens
            if freed >= excess:
                wait = reservation.at + WINDOW_SECONDS - now
                break
        what = (f"a request of {prompt_tokens} prompt tokens and up to "
                f"{asking - prompt_tokens} completion tokens" if asking else "another request")
        raise RateLimitError(
            f"key '{key.name}' used {total} of its {key.tokens_per_minute} tokens per minute; "
            f"no room for {what}", retry_after=math.ceil(wait))
