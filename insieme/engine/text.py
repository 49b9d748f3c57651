"""Turning sampled token pieces into text a client may see.

Two small state machines per sequence:

* ``Utf8Assembler`` keeps the bytes of a piece that ends inside a UTF-8 character until the
  rest arrives, so no half-character ever reaches a client.
* ``StopMatcher`` holds back text that might be the start of a stop string until it is known
  not to be, and cuts the output at the first stop string, which itself is never emitted.
"""

from __future__ import annotations

import codecs


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
    """

    __slots__ = ("_stops", "_held", "_max_len")

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self._max_len = max((len(s) for s in self._stops), default=0)

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        first = -1
        for stop in self._stops:
            at = buffer.find(stop)
            if at != -1 and (first == -1 or at < first):
                first = at
        if first != -1:
            self._held = ""
            return buffer[:first], True
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop."""
        longest = min(len(buffer), self._max_len - 1)
        for size in range(longest, 0, -1):
            tail = buffer[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
