"""Incremental detokenisation and streaming-safe stop strings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from insieme.engine.text import StopMatcher, Utf8Assembler


def test_utf8_never_emits_half_a_character() -> None:
    data = "h€llo 👋".encode()
    assembler = Utf8Assembler()
    out = [assembler.feed(data[i:i + 1]) for i in range(len(data))]
    assert all("\ufffd" not in piece for piece in out)
    assert "".join(out) + assembler.flush() == "h€llo 👋"
    assert out[1] == "" and out[3] == "€"  # held until the third byte of '€'


def test_utf8_invalid_bytes_become_replacement() -> None:
    assembler = Utf8Assembler()
    assert assembler.feed(b"a\xffb") == "a\ufffdb"
    assert assembler.feed(b"\xe2\x82") == ""
    assert assembler.flush() == "\ufffd"


def test_stop_split_across_pieces() -> None:
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("Hello <") == ("Hello ", False)
    assert matcher.feed("/en") == ("", False)
    assert matcher.feed("d> tail") == ("", True)


def test_false_alarm_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ST") == ("", False)
    assert matcher.feed("ART") == ("START", False)
    assert matcher.feed("S") == ("", False)
    assert matcher.flush() == "S"


def test_earliest_of_several_stops_wins() -> None:
    matcher = StopMatcher(["world", "lo w"])
    assert matcher.feed("hello world") == ("hel", True)


@given(st.text(min_size=0, max_size=40), st.lists(st.integers(1, 6), max_size=20),
       st.sampled_from(["ab", "xyz", "\n\n", "é!"]))
def test_streamed_equals_whole_text_cut_at_stop(text: str, cuts: list[int], stop: str) -> None:
    pieces, rest = [], text
    for size in cuts:
        pieces.append(rest[:size])
        rest = rest[size:]
    pieces.append(rest)
    matcher = StopMatcher([stop])
    out = []
    stopped = False
    for piece in pieces:
        emitted, stopped = matcher.feed(piece)
        out.append(emitted)
        if stopped:
            break
    if not stopped:
        out.append(matcher.flush())
    expected = text.split(stop, 1)[0] if stop in text else text
    assert "".join(out) == expected
