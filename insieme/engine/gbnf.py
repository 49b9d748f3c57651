"""Rewrites of GBNF text that keep its language and make llama.cpp's grammar sampler cheaper.

llama.cpp advances one stack per alternative still alive, for every candidate token it checks
and every token it accepts. The schema converter spells an ``enum`` as a flat list of
literals (``"\\"option-0\\"" | "\\"option-1\\"" | ...``): a 2,700-value enum kept 2,700 stacks
alive while the shared ``"option-`` was written, about 50 ms of the engine thread a token for
everyone in the batch. Factored into a trie (``"\\"option-" ( "0" ... | "1" ... )``) the
same language keeps one stack per distinct next character.
"""

from __future__ import annotations

import re

# Only rules with this many literal alternatives are worth the rewrite.
MIN_ALTERNATIVES = 8
# Nested groups past this depth (values that are prefixes of each other, many times over)
# stay flat: llama.cpp parses groups recursively.
MAX_DEPTH = 24

_LITERAL = r'"(?:[^"\\]|\\.)*"'
_LITERAL_RULE = re.compile(rf"^([A-Za-z0-9-]+) ::= ({_LITERAL}(?: \| {_LITERAL})+)$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


def factor_alternatives(grammar: str) -> str:
    """``grammar`` with every rule that is a choice of plain literals written as a trie."""
    return "\n".join(_factor_line(line) for line in grammar.splitlines())


def _factor_line(line: str) -> str:
    match = _LITERAL_RULE.match(line)
    if match is None:
        return line
    literals = re.findall(_LITERAL, match.group(2))
    if len(literals) < MIN_ALTERNATIVES:
        return line
    values: list[str] = []
    for literal in literals:
        value = _unescape(literal[1:-1])
        if value is None:
            return line
        values.append(value)
    body = _trie(sorted(set(values)), 0)
    return line if body is None else f"{match.group(1)} ::= {body}"


def _trie(values: list[str], depth: int) -> str | None:
    """GBNF for exactly ``values`` (sorted, distinct, at least one; "" may be one of them),
    or None when it would nest too deeply."""
    if depth > MAX_DEPTH:
        return None
    prefix = _common_prefix(values)
    rest = [v[len(prefix):] for v in values]
    optional = rest[0] == ""  # sorted: the empty rest comes first
    branches = rest[1:] if optional else rest
    head = _literal(prefix) if prefix else ""
    if not branches:
        return head
    # One alternative per distinct first character; first characters whose continuations
    # are the same grammar share one character class ("a" "\"" | "b" "\"" -> [ab] "\"").
    by_continuation: dict[str, list[str]] = {}
    start = 0
    while start < len(branches):
        end = start
        while end < len(branches) and branches[end][0] == branches[start][0]:
            end += 1
        sub = _trie([v[1:] for v in branches[start:end]], depth + 1)
        if sub is None:
            return None
        by_continuation.setdefault(sub, []).append(branches[start][0])
        start = end
    alternatives = [" ".join(part for part in (_chars(chars), sub) if part)
                    for sub, chars in by_continuation.items()]
    if len(alternatives) == 1 and not optional:
        tail = alternatives[0]
    else:
        tail = f"( {' | '.join(alternatives)} )" + ("?" if optional else "")
    return f"{head} {tail}" if head else tail


def _chars(chars: list[str]) -> str:
    if len(chars) == 1:
        return _literal(chars[0])
    return "[" + "".join(_class_char(c) for c in chars) + "]"


def _class_char(ch: str) -> str:
    if ch in "]\\[":
        return "\\" + ch
    if ch in "^-":  # a range or a negation where they stand bare
        return f"\\x{ord(ch):02x}"
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\x{ord(ch):02x}"
    return ch


def _common_prefix(values: list[str]) -> str:
    first, last = values[0], values[-1]  # sorted: theirs is everyone's
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _unescape(body: str) -> str | None:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = body[i + 1] if i + 1 < len(body) else ""
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                return None
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            return None  # an escape this rewrite does not know: leave the rule alone
    return "".join(out)


def _literal(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
