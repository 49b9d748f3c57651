"""The enum trie rewrite keeps a grammar's language exactly (checked by reading the rewritten
rule back as a regular expression) and is one llama.cpp parses."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from insieme.engine.llama.gbnf import _literal, _unescape, factor_alternatives
from insieme.engine.llama.grammar import grammar_parses, json_schema_grammar

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|[()|?]|\s+')


def as_regex(body: str) -> str:
    """A factored rule's body (literals, classes, groups, ?, |) as a Python regex."""
    out = []
    for token in _TOKEN.findall(body):
        if token.isspace():
            continue
        if token.startswith('"'):
            text = _unescape(token[1:-1])
            assert text is not None
            out.append(re.escape(text))
        elif token.startswith("["):
            chars = _unescape(token[1:-1])
            assert chars is not None
            out.append("[" + "".join(re.escape(c) for c in chars) + "]")
        elif token == "(":
            out.append("(?:")
        else:
            out.append(token)
    assert "".join(_TOKEN.findall(body)) == body  # every character was read
    return "".join(out)


def enum_rule(values: list[object]) -> tuple[str, list[str]]:
    grammar = json_schema_grammar({"enum": values}, param="x")
    rule = next(line for line in grammar.splitlines() if line.startswith("root ::="))
    return rule[len("root ::= "):], [json.dumps(v, ensure_ascii=False) for v in values]


strings = st.lists(st.text(alphabet="ab-^][\\\"\n\té一\x01", max_size=6), min_size=8,
                   max_size=40, unique=True)


@given(strings)
def test_the_trie_accepts_exactly_the_alternatives(alternatives: list[str]) -> None:
    flat = "root ::= " + " | ".join(_literal(a) for a in alternatives)
    factored = factor_alternatives(flat)
    assert grammar_parses(factored), factored
    pattern = re.compile(as_regex(factored[len("root ::= "):]))
    assert all(pattern.fullmatch(a) for a in alternatives), factored
    for a in alternatives:  # nothing one character longer or shorter gets in
        for near in (a[:-1], a + "x", a + "]", "x" + a):
            if near not in alternatives:
                assert not pattern.fullmatch(near), (near, factored)


def test_a_wide_enum_becomes_a_trie_that_llama_cpp_parses() -> None:
    body, _ = enum_rule([f"option-{i}" for i in range(2700)])
    assert body.count("|") < 300  # not 2,700 flat alternatives
    assert body.startswith('"\\"option-" (')


def test_short_or_other_rules_are_left_alone() -> None:
    grammar = 'root ::= "a" | "b"\nx ::= [a-z]+ | "c"'
    assert factor_alternatives(grammar) == grammar
    nested = "\n".join(["root ::= " + " | ".join(f'"{"a" * k}"' for k in range(1, 40))])
    factored = factor_alternatives(nested)
    assert factored == nested or grammar_parses(factored)  # too deep: stays flat
