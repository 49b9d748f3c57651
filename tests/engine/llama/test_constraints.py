"""Every kind of constraint compiled to a grammar that lets through exactly what it should.

What a grammar accepts is read from llama.cpp's own grammar sampler over the bundled model's
vocabulary (each token of a string checked, then accepted; then whether it may end there),
and the sampler writes only allowed text when it generates with the real model."""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import math
import re
from collections.abc import Iterator
from typing import Any

import llama_cpp as llama
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insieme.config import bundled_model_path
from insieme.engine.constraints import (
    Choice,
    Constraint,
    JsonObject,
    JsonSchema,
    Regex,
    ToolCall,
    ToolFunction,
)
from insieme.engine.llama import grammar as grammar_module
from insieme.engine.llama.grammar import compile_constraint, grammar_parses
from insieme.engine.llama.runtime import Batch, ContextShape, LlamaRuntime
from insieme.engine.llama.sampler import GrammarPrototype, Sampler
from insieme.engine.types import SamplingParams
from insieme.errors import InvalidRequestError

MAX_BYTES = 256 * 1024
WEATHER = ToolFunction("get_weather", {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 20}}, "required": ["city"]},
    param="tools.0.function.parameters")
TIME = ToolFunction("get_time", {"type": "object", "properties": {
    "zone": {"$ref": "#/$defs/Zone"}}, "required": ["zone"],
    "$defs": {"Zone": {"enum": ["UTC", "CET"]}}}, param="tools.2.function.parameters")


def compiled(constraint: Constraint) -> str:
    grammar = compile_constraint(constraint, max_bytes=MAX_BYTES)
    assert grammar is not None
    return grammar


@pytest.mark.parametrize("constraint", [
    JsonSchema({"type": "object", "properties": {"a": {"type": "integer"}}}),
    JsonObject(),
    Choice(("yes", "no")),
    Choice(tuple(f"option-{i}" for i in range(40))),
    Regex(r"\d{3}-\d{4}"),
    ToolCall((WEATHER, TIME)),
], ids=["schema", "object", "choice", "wide-choice", "regex", "tool-call"])
def test_every_kind_becomes_a_grammar_llama_cpp_parses(constraint: Constraint) -> None:
    grammar = compiled(constraint)
    assert grammar_parses(grammar)
    assert any(line.startswith("root ::=") for line in grammar.splitlines())


def test_a_tool_call_that_is_not_forced_is_left_free() -> None:
    assert compile_constraint(ToolCall((WEATHER,), forced=False), max_bytes=MAX_BYTES) is None


def test_the_same_schema_in_any_key_order_is_built_once(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    builds: list[Any] = []
    build = grammar_module._build_grammar

    def counting(schema: Any, param: str) -> str:
        builds.append(schema)
        return build(schema, param)

    monkeypatch.setattr(grammar_module, "_build_grammar", counting)
    grammar_module._compiled.cache_clear()
    first = {"title": "cache test", "type": "object", "properties": {"b": {"type": "string"}}}
    again = {"properties": {"b": {"type": "string"}}, "type": "object", "title": "cache test"}
    grammar = compiled(JsonSchema(first))
    assert compiled(JsonSchema(again)) is grammar
    assert len(builds) == 1
    assert compiled(JsonSchema(first, param="tools")) == grammar  # another entry, same text
    assert len(builds) == 2


@pytest.mark.parametrize(("constraint", "param", "named"), [
    (JsonSchema({"type": "integer", "minimum": 3}, param="response_format.schema"),
     "response_format.schema", "minimum"),
    (ToolCall((WEATHER, ToolFunction("f", {"type": "object", "properties": {
        "n": {"type": "integer", "maximum": 9}}}, param="tools.1.function.parameters"))),
     "tools.1.function.parameters", "maximum"),
    (ToolCall((TIME, ToolFunction("g", {"type": "object", "$defs": {"Zone": {"type": "string"}}},
                                  param="tools.3.function.parameters"))),
     "tools.3.function.parameters", "$defs/Zone"),
    (ToolCall(()), "tools", "at least one function"),
    (Choice((), param="choice"), "choice", "at least one option"),
    (Regex("(", param="regex"), "regex", "invalid regular expression"),
    (Regex(r"(a)\1"), "response_format", "backreferences"),
    (Regex(r"a(?=b)"), "response_format", "lookahead"),
    (Regex(r"\bword"), "response_format", "word boundaries"),
    (Regex(r"a^b"), "response_format", "anchors"),
    (Regex(r"(?i)abc"), "response_format", "ignoring case"),
    (Regex(r"a*+"), "response_format", "possessive"),
    (Regex(r"(?>ab)"), "response_format", "atomic"),
    (Regex(r"[\Da]"), "response_format", "beside other characters"),
    (Regex(r"a{1001}"), "response_format", "above 1000"),
    (Regex(r"(((a{999}){999}){999})"), "response_format", "bytes of grammar"),
])
def test_what_cannot_be_enforced_is_refused_naming_the_field(
        constraint: Constraint, param: str, named: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        compile_constraint(constraint, max_bytes=MAX_BYTES)
    assert refused.value.param == param
    assert named in refused.value.message


@pytest.mark.parametrize(("constraint", "what"), [
    (JsonSchema({"type": "array", "items": {"type": "string", "maxLength": 500},
                 "maxItems": 200}, param="response_format.schema"), "schema"),
    (Choice(tuple(hashlib.sha256(bytes([i])).hexdigest() for i in range(100)), param="c"),
     "choice"),
    (Regex(r"[a-z]{900}", param="r"), "regular expression"),
])
def test_a_grammar_past_the_limit_is_refused(constraint: Constraint, what: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        compile_constraint(constraint, max_bytes=2000)
    assert refused.value.code == "schema_too_large"
    assert refused.value.param == constraint.param
    assert f"the {what}'s grammar" in refused.value.message
    assert "--max-grammar-bytes" in refused.value.message


# -- what the grammars let through ------------------------------------------------------------

@pytest.fixture(scope="module")
def runtime() -> Iterator[LlamaRuntime]:
    rt = LlamaRuntime(str(bundled_model_path()),
                      ContextShape(n_ctx=512, n_batch=128, n_seq_max=1, n_threads=1))
    yield rt
    rt.close()


def accepts(runtime: LlamaRuntime, grammar: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler lets ``text`` through whole, and then lets it end."""
    sampler = llama.llama_sampler_init_grammar(runtime.vocab, grammar.encode(), b"root")
    assert sampler
    end = int(llama.llama_vocab_eos(runtime.vocab))
    try:
        for token in [*runtime.tokenize(text, add_special=False, parse_special=False), end]:
            candidate = llama.llama_token_data(token, 0.0, 0.0)
            llama.llama_sampler_apply(sampler, ctypes.byref(llama.llama_token_data_array(
                ctypes.pointer(candidate), 1, -1, False)))
            if candidate.logit == -math.inf:
                return False
            if token != end:  # accepting a token the grammar refuses would abort llama.cpp
                llama.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama.llama_sampler_free(sampler)


@pytest.mark.model
@pytest.mark.parametrize("options", [
    ("yes", "no"),
    ("positive", "negative", "neutral", "neg"),
    ("", "a", "ab", 'say "hi"\n', "ünïcode ✓", "[x]", "back\\slash"),
    tuple(f"option-{i}" for i in range(30)),
])
def test_a_choice_lets_through_exactly_its_options(runtime: LlamaRuntime,
                                                   options: tuple[str, ...]) -> None:
    grammar = compiled(Choice(options))
    for option in options:
        assert accepts(runtime, grammar, option), option
    near = {text for o in options for text in (o + "x", o[:-1], o.upper(), " " + o)}
    for text in near - set(options):
        assert not accepts(runtime, grammar, text), text


# Patterns over the characters of ALPHABET: every string up to 4 of them is checked against
# re.fullmatch, so the grammar lets through no more and no less.
ALPHABET = "ab-.\"\n"
EXHAUSTIVE = [
    r"a+", r"^(ab|b)*$", r"a{2,3}", r"a{2,}b?", r"[a-]b", r"[^a]", r"\.", r'"a"', r"a.b",
    r"(?s)a.", r"(?:ab){1,2}", r"a|b-|", r"[ab]{0,2}-", r"a*?b", r"(a|b)?\n", r"\W", r"[\w.]+",
    r"(?x) a  b # spaced", r"[\"-.]", r"", r"a{0}b", r"a|\-",
]


@pytest.mark.model
@pytest.mark.parametrize("pattern", EXHAUSTIVE)
def test_a_regex_lets_through_exactly_what_it_matches_whole(runtime: LlamaRuntime,
                                                             pattern: str) -> None:
    grammar = compiled(Regex(pattern))
    for size in range(5):
        for chars in itertools.product(ALPHABET, repeat=size):
            text = "".join(chars)
            expected = re.fullmatch(pattern, text) is not None
            assert accepts(runtime, grammar, text) is expected, (pattern, text)


RICH = [r"\d{3}-\d{4}", r"[A-Z][a-z]{1,8} [A-Z]\.", r"(\w+@\w+\.(com|org))", r"\s*\S+\s*",
        r"#[0-9a-fA-F]{6}", r"é+ü?", r"[^\n]{0,5}$"]


@pytest.mark.model
@pytest.mark.parametrize("pattern", RICH)
def test_a_regex_lets_through_whatever_it_matches(runtime: LlamaRuntime, pattern: str) -> None:
    grammar = compiled(Regex(pattern))

    @settings(max_examples=60, deadline=None)
    @given(st.from_regex(pattern, fullmatch=True, alphabet=st.characters(
        codec="utf-8", categories=["L", "N", "P", "S", "Zs"], max_codepoint=0x2FF)))
    def check(text: str) -> None:
        # Outside ASCII, \d \w \s mean only their ASCII classes (as in JSON Schema).
        if re.fullmatch(pattern, text, re.ASCII):
            assert accepts(runtime, grammar, text), text

    check()


@pytest.mark.model
def test_a_tool_call_lets_through_one_valid_call(runtime: LlamaRuntime) -> None:
    grammar = compiled(ToolCall((WEATHER, TIME)))
    good = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>']
    bad = ['{"name": "get_weather", "arguments": {"city": "Paris"}}',
           '<tool_call>\n{"name": "get_time", "arguments": {"zone": "EST"}}\n</tool_call>',
           '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>',
           '<tool_call>\n{"name": "other", "arguments": {"city": "Paris"}}\n</tool_call>']
    assert all(accepts(runtime, grammar, text) for text in good)
    assert not any(accepts(runtime, grammar, text) for text in bad)
    plain = compiled(ToolCall((WEATHER,), prefix="", suffix=""))
    assert accepts(runtime, plain, '{"name": "get_weather", "arguments": {"city": "Rome"}}')


def generate(runtime: LlamaRuntime, grammar: str, prompt: str, seed: int) -> str:
    """Sampled text (temperature 1) from the real model under ``grammar``, to its end."""
    runtime.clear()
    tokens = runtime.tokenize(prompt, add_special=False)
    batch = Batch(len(tokens), 1)
    for pos, token in enumerate(tokens):
        batch.add(token, pos, [0], pos == len(tokens) - 1)
    assert runtime.decode(batch) == 0
    sampler = Sampler(SamplingParams(temperature=1.0, seed=seed), runtime.n_vocab,
                      GrammarPrototype(grammar))
    row, pos, out = batch.size - 1, len(tokens), b""
    try:
        for _ in range(40):
            token = sampler.sample(runtime.ctx, row)
            if runtime.is_eog(token):
                return out.decode()
            out += runtime.piece(token)
            batch.clear()
            row = batch.add(token, pos, [0], True)
            pos += 1
            assert runtime.decode(batch) == 0
    finally:
        sampler.close()
    raise AssertionError(f"no end after 40 tokens: {out!r}")


@pytest.mark.model
@pytest.mark.parametrize(("constraint", "ask"), [
    (Choice(("sunny", "rainy", "cloudy with a chance of meatballs")), "What is the weather?"),
    (Regex(r"\d{3}-\d{4}"), "Make up a phone number."),
    (Regex(r"(red|green|blue) [a-z]{2,6}"), "Name a colour and a thing."),
])
def test_the_sampler_writes_only_what_the_constraint_allows(
        runtime: LlamaRuntime, constraint: Choice | Regex, ask: str) -> None:
    grammar = compiled(constraint)
    prompt = f"<|im_start|>user\n{ask}<|im_end|>\n<|im_start|>assistant\n"
    for seed in range(4):
        text = generate(runtime, grammar, prompt, seed)
        if isinstance(constraint, Choice):
            assert text in constraint.options
        else:
            assert re.fullmatch(constraint.pattern, text), text
