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


class _QuadraticStops:
    """The matcher as it was before the automaton (issue 13): the same answers, at a cost of
    O(stop length²) per token. Kept here as the reference the automaton must agree with."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.max_len = max((len(s) for s in self.stops), default=0)

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buffer = self.held + text
        found = [at for s in self.stops if (at := buffer.find(s)) != -1]
        if found:
            self.held = ""
            return buffer[:min(found)], True
        keep = 0
        for size in range(min(len(buffer), self.max_len - 1), 0, -1):
            if any(s.startswith(buffer[-size:]) for s in self.stops):
                keep = size
                break
        self.held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[: len(buffer) - keep], False


@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=6), min_size=1, max_size=4),
       st.lists(st.text(alphabet="abcd", max_size=5), max_size=30))
def test_automaton_agrees_with_the_reference(stops: list[str], pieces: list[str]) -> None:
    ours, reference = StopMatcher(stops), _QuadraticStops(stops)
    for piece in pieces:
        got, expected = ours.feed(piece), reference.feed(piece)
        assert got == expected
        if got[1]:
            return
    assert ours.flush() == reference.held


def test_long_stops_hold_back_only_what_could_begin_one() -> None:
    """16 stops of 256 characters that keep almost matching: only what could still begin a
    stop is held, and the output is cut exactly where the one that completes begins."""
    stops = ["ab" * 127 + "X" + str(i) for i in range(16)]
    matcher = StopMatcher(stops)
    out = [matcher.feed("zz")[0]]
    for _ in range(2000):
        text, stopped = matcher.feed("ab")
        assert not stopped
        out.append(text)
    assert len("".join(out)) == 2 + 4000 - 254  # 254 characters could still begin a stop
    text, stopped = matcher.feed("X3 and on")
    assert stopped
    assert "".join(out) + text == "zz" + "ab" * (2000 - 127)
