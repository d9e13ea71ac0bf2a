"""Stop strings over streamed text: emit what cannot be part of a stop string, hold back the rest.

Which match wins: the stop string that is completed first, i.e. the match that ends earliest in the
text. When two matches end at the same position, the longer one wins (it starts earlier). This is
what a check after every character would find, so the result does not depend on how the text is
split into ``feed()`` calls, and a match is reported as soon as it is complete, with no need to wait
for more text. It is also what engines do that check stop strings after each token (vLLM, HF).
The only difference from "the earliest start wins" comes with overlapping stop strings. With
``["abcd", "bc"]`` and the text ``"abcd"``, ``"bc"`` wins. A stop string that is a prefix of
another (``"ab"`` and ``"abc"``) therefore always matches first.

Cost per ``feed()``: one ``str.find`` per stop string over the new text (plus the held-back part),
and one ``str.endswith`` with a tuple of all proper prefixes of the stop strings. When that does not
match, nothing is held back. All of the loops run in C; the Python loops are over stop strings or
prefix lengths, never over the text.
"""

from __future__ import annotations


class StopStringMatcher:
    """Holds back text that could be the start of a stop string until it matches or diverges."""

    __slots__ = ("_stops", "_include", "_prefixes", "_prefixes_by_len", "_held", "_stopped_by")

    def __init__(self, stop: list[str], *, include_stop_str_in_output: bool = False) -> None:
        # Longest first, so that ties on the end position go to the longer stop string.
        self._stops: tuple[str, ...] = tuple(sorted({s for s in stop if s}, key=len, reverse=True))
        self._include = include_stop_str_in_output
        self._prefixes_by_len = _proper_prefixes_by_len(self._stops)
        self._prefixes: tuple[str, ...] = tuple(p for group in self._prefixes_by_len for p in group)
        self._held = ""
        self._stopped_by: str | None = None

    @property
    def stopped_by(self) -> str | None:
        """The stop string that matched, or None."""
        return self._stopped_by

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit now, matched). When matched is True the emitted text ends right before the
        stop string (or right after it when include_stop_str_in_output), and later calls must not be made
        (they return ``("", True)``)."""
        if not self._stops:
            return text, False
        if self._stopped_by is not None:
            return "", True
        held = self._held
        buf = held + text if held else text
        stop, start = self._first_match(buf, len(held))
        if stop is not None:
            self._stopped_by = stop
            self._held = ""
            return buf[: (start + len(stop)) if self._include else start], True
        keep = self._partial_len(buf)
        if keep == 0:
            self._held = ""
            return buf, False
        self._held = buf[-keep:]
        return buf[:-keep], False

    def flush(self) -> str:
        """At the end of the stream (no match), release what was held back."""
        held, self._held = self._held, ""
        return held

    def _first_match(self, buf: str, held_len: int) -> tuple[str | None, int]:
        """The stop string completed first in ``buf`` and its start (ties: the longer one)."""
        best: str | None = None
        best_start = best_end = -1
        for stop in self._stops:
            # A match must end in the new text: the held part holds no complete stop string.
            start = buf.find(stop, max(0, held_len - len(stop) + 1))
            if start >= 0 and (best is None or start + len(stop) < best_end):
                best, best_start, best_end = stop, start, start + len(stop)
        return best, best_start

    def _partial_len(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        if not buf.endswith(self._prefixes):
            return 0
        for group in self._prefixes_by_len:
            if buf.endswith(group):
                return len(group[0])
        return 0  # unreachable: some group matched above


def _proper_prefixes_by_len(stops: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Distinct proper prefixes of the stop strings, grouped by length, longest group first."""
    by_len: dict[int, set[str]] = {}
    for stop in stops:
        for n in range(1, len(stop)):
            by_len.setdefault(n, set()).add(stop[:n])
    return tuple(tuple(sorted(by_len[n])) for n in sorted(by_len, reverse=True))
