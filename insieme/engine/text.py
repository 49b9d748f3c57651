"""Turning sampled token pieces into text a client may see.

Two small state machines per sequence:

* ``Utf8Assembler`` keeps the bytes of a piece that ends inside a UTF-8 character until the
  rest arrives, so no half-character ever reaches a client.
* ``StopMatcher`` holds back text that might be the start of a stop string until it is known
  not to be, and cuts the output at the first stop string, which itself is never emitted.
"""

from __future__ import annotations

import codecs
from collections import deque


class Utf8Assembler:
    """Incremental bytes -> str; invalid bytes become U+FFFD instead of raising."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Streaming-safe stop strings.

    ``feed(text)`` returns ``(safe_text, stopped)``. Text that could still grow into a stop
    string is held back; ``flush()`` releases it when the sequence ends for another reason.
    An Aho-Corasick automaton over the stops follows the output a character at a time, so a
    token costs O(its characters), however long or many the stop strings are; its state is
    the longest tail of the output that begins some stop, which is exactly what to hold back.
    """

    __slots__ = ("_stops", "_held", "_goto", "_fail", "_depth", "_ends", "_state")

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self._state = 0
        goto: list[dict[str, int]] = [{}]
        depth = [0]
        ends = [False]
        for stop in self._stops:
            node = 0
            for ch in stop:
                child = goto[node].get(ch)
                if child is None:
                    child = len(goto)
                    goto[node][ch] = child
                    goto.append({})
                    depth.append(depth[node] + 1)
                    ends.append(False)
                node = child
            ends[node] = True
        fail = [0] * len(goto)
        pending = deque(goto[0].values())  # breadth first: a node's fail link is shallower
        while pending:
            node = pending.popleft()
            for ch, child in goto[node].items():
                back = fail[node]
                while back and ch not in goto[back]:
                    back = fail[back]
                fail[child] = goto[back].get(ch, 0)
                ends[child] = ends[child] or ends[fail[child]]
                pending.append(child)
        self._goto, self._fail, self._depth, self._ends = goto, fail, depth, ends

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        goto, fail, ends = self._goto, self._fail, self._ends
        state = self._state
        stopped = False
        for ch in text:
            while state and ch not in goto[state]:
                state = fail[state]
            state = goto[state].get(ch, 0)
            if ends[state]:
                stopped = True
                break
        self._state = state
        buffer = self._held + text
        if stopped:
            # Cut at the earliest stop in what is at hand (held text plus this piece).
            self._held = ""
            first = min(at for stop in self._stops if (at := buffer.find(stop)) != -1)
            return buffer[:first], True
        keep = self._depth[state]
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        self._state = 0
        return held
