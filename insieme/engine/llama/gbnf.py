"""GBNF text: a choice of literals as a trie, a regular expression as a rule, and rewrites that
keep a grammar's language and make llama.cpp's grammar sampler cheaper.

llama.cpp advances one stack per alternative still alive, for every candidate token it checks
and every token it accepts. The schema converter spells an ``enum`` as a flat list of
literals (``"\\"option-0\\"" | "\\"option-1\\"" | ...``): a 2,700-value enum kept 2,700 stacks
alive while the shared ``"option-`` was written, about 50 ms of the engine thread a token for
everyone in the batch. Factored into a trie (``"\\"option-" ( "0" ... | "1" ... )``) the
same language keeps one stack per distinct next character.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from re import _constants as sre  # type: ignore[attr-defined]  # ``re``'s own parser,
from re import _parser as sre_parser  # type: ignore[attr-defined]  # not in typeshed
from typing import Any

# Only rules with this many literal alternatives are worth the rewrite.
MIN_ALTERNATIVES = 8
# Nested groups past this depth (values that are prefixes of each other, many times over)
# stay flat: llama.cpp parses groups recursively.
MAX_DEPTH = 24

_LITERAL = r'"(?:[^"\\]|\\.)*"'
_LITERAL_RULE = re.compile(rf"^([A-Za-z0-9-]+) ::= ({_LITERAL}(?: \| {_LITERAL})+)$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


def alternatives(values: Iterable[str]) -> str:
    """A GBNF expression for exactly one of ``values`` (at least one), factored as a trie."""
    distinct = sorted(set(values))
    assert distinct, "a choice needs at least one value"
    body = _trie(distinct, 0)
    if body is None:  # too deep to factor: flat
        return " | ".join(literal(value) for value in distinct)
    return body or '""'


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
    for quoted in literals:
        value = _unescape(quoted[1:-1])
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
    head = literal(prefix) if prefix else ""
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
        return literal(chars[0])
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


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
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


# -- regular expressions ----------------------------------------------------------------------

class Unenforceable(ValueError):
    """A regular expression feature a grammar cannot express (the message names it)."""


# The class shorthands mean what they mean in JSON Schema (and JavaScript): ASCII classes.
# Text under ``\d``, ``\w``, ``\s`` then matches in Python too; under ``\D``, ``\W``, ``\S``
# a non-ASCII digit, letter or space matches as Python reads ``re.ASCII`` patterns.
_CLASSES = {sre.CATEGORY_DIGIT: "0-9", sre.CATEGORY_WORD: "0-9A-Z_a-z",
            sre.CATEGORY_SPACE: " \\t\\n\\r\\x0B\\x0C"}
_NEGATED = {sre.CATEGORY_NOT_DIGIT: sre.CATEGORY_DIGIT, sre.CATEGORY_NOT_WORD: sre.CATEGORY_WORD,
            sre.CATEGORY_NOT_SPACE: sre.CATEGORY_SPACE}
_REFUSED = {
    sre.GROUPREF: "backreferences", sre.GROUPREF_EXISTS: "conditional groups",
    sre.ASSERT: "lookahead and lookbehind", sre.ASSERT_NOT: "lookahead and lookbehind",
    sre.ATOMIC_GROUP: "atomic groups", sre.POSSESSIVE_REPEAT: "possessive repeats",
}
_ANCHORS = {sre.AT_BEGINNING, sre.AT_BEGINNING_STRING, sre.AT_END, sre.AT_END_STRING}
_ATOMS = {sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN, sre.SUBPATTERN, sre.BRANCH}
# Spelled-out repeats past this are refused before they are built (the caller bounds the
# grammar's size more tightly).
MAX_REGEX_GRAMMAR = 4 * 1024 * 1024

_Items = Sequence[tuple[Any, Any]]


def regex_rule(pattern: str, *, max_repeat: int) -> str:
    """A GBNF expression for exactly the strings ``pattern`` matches whole (``re.fullmatch``).

    ``\\d``, ``\\w`` and ``\\s`` are ASCII classes (see ``_CLASSES``). ``re.error`` for a
    pattern that is not one; ``Unenforceable`` for backreferences, lookaround, ``\\b``,
    anchors inside the pattern, ignoring case, atomic groups, possessive repeats and repeat
    bounds above ``max_repeat``. Bounded repeats are spelled
    out (``x{2,3}`` is ``x x ( x )?``), as the schema converter does: the grammar's size is
    then what llama.cpp builds, and a few characters of pattern cannot make it huge unseen.
    """
    parsed = sre_parser.parse(pattern)
    if parsed.state.flags & sre.SRE_FLAG_IGNORECASE:
        raise Unenforceable("ignoring case ('(?i)') is not supported")
    return _Regex(max_repeat).sequence(_unanchored(list(parsed)),
                                       bool(parsed.state.flags & sre.SRE_FLAG_DOTALL))


def _unanchored(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """``items`` without a leading ``^`` and a trailing ``$``: a match is always whole."""
    if items and items[0][0] == sre.AT and items[0][1] in _ANCHORS:
        items = items[1:]
    if items and items[-1][0] == sre.AT and items[-1][1] in _ANCHORS:
        items = items[:-1]
    if len(items) == 1 and items[0][0] == sre.BRANCH:  # ``^a|b$``
        items = [(sre.BRANCH, (None, [_unanchored(list(b)) for b in items[0][1][1]]))]
    return items


class _Regex:
    """One translation: the parse tree of ``re`` to GBNF, node by node."""

    def __init__(self, max_repeat: int) -> None:
        self.max_repeat = max_repeat
        self.spelled = 0  # characters of spelled-out repeats so far, nested ones included

    def sequence(self, items: _Items, dotall: bool) -> str:
        parts: list[str] = []
        text: list[str] = []  # consecutive literal characters, written as one literal
        for op, value in items:
            if op == sre.LITERAL:
                text.append(chr(value))
                continue
            if text:
                parts.append(literal("".join(text)))
                text = []
            parts.append(self.node(op, value, dotall))
        if text:
            parts.append(literal("".join(text)))
        return " ".join(part for part in parts if part) or '""'

    def node(self, op: Any, value: Any, dotall: bool) -> str:
        if op == sre.NOT_LITERAL:
            return f"[^{_class_char(chr(value))}]"
        if op == sre.ANY:
            return "[\\U00000000-\\U0010FFFF]" if dotall else "[^\\n]"
        if op == sre.IN:
            return _class(value)
        if op == sre.BRANCH:
            return "( " + " | ".join(self.sequence(b, dotall) for b in value[1]) + " )"
        if op == sre.SUBPATTERN:
            _, add, remove, items = value
            if add & sre.SRE_FLAG_IGNORECASE:
                raise Unenforceable("ignoring case ('(?i)') is not supported")
            dotall = (dotall or bool(add & sre.SRE_FLAG_DOTALL)) and not (
                remove & sre.SRE_FLAG_DOTALL)
            return f"( {self.sequence(items, dotall)} )"
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):  # lazy or greedy: the same whole matches
            low, high, items = value
            return self.repeat(items, low, None if high == sre.MAXREPEAT else high, dotall)
        if op == sre.AT:
            if value in _ANCHORS:
                raise Unenforceable("anchors ('^', '$') inside the pattern are not supported")
            raise Unenforceable("word boundaries ('\\b', '\\B') are not supported")
        raise Unenforceable(f"{_REFUSED.get(op, str(op).lower())} are not supported")

    def repeat(self, items: _Items, low: int, high: int | None, dotall: bool) -> str:
        if max(low, high or 0) > self.max_repeat:
            raise Unenforceable(f"repeat bounds above {self.max_repeat} are not supported")
        body = self.sequence(items, dotall)
        if high == 0 or body == '""':
            return ""
        if not (len(items) == 1 and items[0][0] in _ATOMS):
            body = f"( {body} )"
        if high is None and low <= 1:
            return body + ("*" if low == 0 else "+")
        if (low, high) == (0, 1):
            return body + "?"
        self.spelled += len(body) * max(low, high or 0)
        if self.spelled > MAX_REGEX_GRAMMAR:
            raise Unenforceable(f"repeats spelling out over {MAX_REGEX_GRAMMAR} bytes of "
                                "grammar are not supported")
        required = " ".join([body] * low)
        if high is None:
            return f"{required} {body}*"
        if high == low:
            return required
        # Nested, ``( x ( x x? )? )?`` rather than ``x? x? x?``: one way to match each
        # length, so llama.cpp keeps one stack alive, not one per way.
        extra = high - low
        optional = f"( {body} " * (extra - 1) + f"{body}?" + " )?" * (extra - 1)
        return f"{required} {optional}" if required else optional


def _class(items: _Items) -> str:
    negate, chars = False, []
    for op, value in items:
        if op == sre.NEGATE:
            negate = True
        elif op == sre.LITERAL:
            chars.append(_class_char(chr(value)))
        elif op == sre.RANGE:
            chars.append(f"{_class_char(chr(value[0]))}-{_class_char(chr(value[1]))}")
        elif op == sre.CATEGORY and value in _CLASSES:
            chars.append(_CLASSES[value])
        elif op == sre.CATEGORY and value in _NEGATED and len(items) == 1:
            return f"[^{_CLASSES[_NEGATED[value]]}]"  # \\D, \\W, \\S on their own
        else:
            raise Unenforceable("'\\D', '\\W' or '\\S' beside other characters in brackets "
                                "are not supported")
    return ("[^" if negate else "[") + "".join(chars) + "]"


_literal = literal  # the name tests/engine/llama/test_gbnf.py reads it by
