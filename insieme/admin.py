"""``insieme usage`` (totals from the usage ledger) and ``insieme keys new`` (a key and its
entry for ``--api-keys-file``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from datetime import datetime

from insieme.api.keys import hash_key
from insieme.errors import ConfigError
from insieme.ledger import default_ledger_path, usage_totals


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = sub.add_parser("usage", help="print token totals per API key from the usage ledger")
    usage.add_argument("--key", default=None, metavar="NAME", help="only this key")
    usage.add_argument("--since", default=None, metavar="DATE",
                       help="only requests finished from DATE on (YYYY-MM-DD or ISO 8601 time)")
    usage.add_argument("--usage-db", default=None, metavar="PATH",
                       help=f"the ledger (default: $INSIEME_USAGE_DB or {default_ledger_path()})")
    usage.set_defaults(handler=_usage)

    keys = sub.add_parser("keys", help="make API keys for --api-keys-file")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser(
        "new", help="make a key: its keys-file entry on stdout, the secret on stderr")
    new.add_argument("name", help="the key's name (shown in logs, metrics and usage)")
    new.add_argument("--secret-file", default=None, metavar="PATH",
                     help="write the secret to PATH instead of stderr (a new file, mode 0600)")
    new.add_argument("--requests-per-minute", type=int, default=None, metavar="N")
    new.add_argument("--tokens-per-minute", type=int, default=None, metavar="N")
    new.set_defaults(handler=_new_key)


def parse_since(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since: not a date: {text!r} (try 2025-01-31)") from exc


def _usage(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    path = args.usage_db or default_ledger_path()
    totals = usage_totals(path, key=args.key, since=since)
    header = ("key", "model", "requests", "prompt", "completion", "cached", "total")
    counts = [[t.requests, t.prompt_tokens, t.completion_tokens, t.cached_tokens,
               t.total_tokens] for t in totals]
    rows = [[t.key_name or "(no key)", t.model, *c] for t, c in zip(totals, counts, strict=True)]
    if len(rows) > 1:
        rows.append(["all", "", *(sum(column) for column in zip(*counts, strict=True))])
    if not rows:
        print("no requests recorded" + (f" for key {args.key}" if args.key else ""))
        return 0
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    return 0


def _new_key(args: argparse.Namespace) -> int:
    # stdout is meant for ``>> keys.toml``: it carries only the hash. The secret goes to the
    # terminal (stderr) or a private file, so the keys file never holds it.
    secret = "sk-" + secrets.token_urlsafe(32)
    if args.secret_file:
        _write_secret(args.secret_file, secret)
        print(f"insieme: wrote the secret for key {args.name} to {args.secret_file}",
              file=sys.stderr)
    else:
        print(f"insieme: the secret for key {args.name}, shown once (give it to the client; "
              f"the keys file keeps only its hash):\n{secret}", file=sys.stderr)
    name = args.name if re.fullmatch(r"[A-Za-z0-9_-]+", args.name) else json.dumps(args.name)
    # The blank line keeps the entry apart from (and off the last line of) what is already there.
    print(f"\n[keys.{name}]")
    print(f'sha256 = "{hash_key(secret)}"')
    if args.requests_per_minute:
        print(f"requests_per_minute = {args.requests_per_minute}")
    if args.tokens_per_minute:
        print(f"tokens_per_minute = {args.tokens_per_minute}")
    return 0


def _write_secret(path: str, secret: str) -> None:
    """Create ``path`` readable by its owner only; an existing file may hold a key already
    handed out, so it is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"--secret-file {path} already exists; not overwriting it") from None
    except OSError as exc:
        raise ConfigError(f"--secret-file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
