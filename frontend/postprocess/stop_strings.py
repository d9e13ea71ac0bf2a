"""Stop strings over streamed text: emit what cannot be part of a stop string, hold back the rest.

Which match wins: the stop string that is completed first, i.e. the match that ends earliest in the
text. When two matches end at the same position, the longer one wins (it starts earlier). This is
what a check after every character would find, so the result does not depend on how the text is
split into ``feed()`` calls, and a match is reported as soon as it is complete, with no need to wait
for more text. It is also what engines do that check stop strings after each token (vLLM, HF).
The only difference from "the earliest start wins" comes with overlapping stop strings. With
``["abcd", "bc"]`` and the text ``"abcd"``, ``"bc"`` wins. A stop string that is a prefix of
another (``"ab"`` and ``"abc"``) therefore always matches first.

What is held back is the longest suffix of the text so far that is a proper prefix of a stop string: it
is released as soon as it can no longer become one (or by ``flush()`` at the end of the stream).

How: an Aho-Corasick automaton over the stop strings (:class:`_Automaton`), whose state after the text
so far is exactly that held-back suffix. Memory is linear in the stop strings' total length (about 6
bytes per character: the trie's chain characters as one string, an ``array`` of failure links and a
``bytearray`` of match flags; branches only where stop strings diverge), never per prefix. Cost per
``feed()``: while nothing is held back, one C-level search for a character that can start a stop string
(a regex character class, or ``str.find`` for a single one); when none is in the new text, that is all.
From such a character on, one automaton step per character until the state is back at the root, so the
work over a whole stream is linear in its length, whatever the stop strings; new text that just goes on along
the held-back stop string is one C comparison. The held-back text is shorter than the longest stop string.
Automata of small stop lists are cached (clients repeat their stop lists), so building one is not paid per
request.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from functools import lru_cache

_CACHED_TOTAL_CHARS = 1024  # stop lists up to this many characters in all share cached automata
_CACHE_SIZE = 256


class _Automaton:
    """Aho-Corasick automaton of a set of stop strings, in a compact layout (linear in their total length).

    Node 0 is the root. Each stop string adds the trie nodes of its characters past the longest prefix
    already in the trie, as one contiguous range of ids, so the child of node ``n`` along its own stop
    string is ``n + 1``, reached by the character ``chain[n]``; children where stop strings diverge are in
    ``branch[n]`` (a dict per branching node, at most one entry per stop string in all). The last node of a
    range is a leaf: it completes a stop string, so the matcher never steps from it. ``fail[n]`` is the node
    of the longest proper suffix of node ``n``'s string that is in the trie; ``out[n]`` is 1 when a stop
    string is a suffix of node ``n``'s string, and ``terminal`` maps the node of each stop string to it.
    """

    __slots__ = ("chain", "branch", "fail", "out", "terminal", "bases", "base_depths", "first", "starts")

    def __init__(self, stops: tuple[str, ...]) -> None:
        branch: dict[int, dict[str, int]] = {}
        terminal: dict[int, str] = {}
        bases = [0]  # first node of each range (range 0: the root alone)
        base_depths = [0]  # depth of each range's first node
        range_stops = [""]  # the stop string whose characters each range holds
        range_of_base: dict[int, int] = {}
        size = 1
        for stop in stops:
            # the longest prefix of `stop` already in the trie: its node, length, and the range along which
            # the node's chain child lies (the root's is range 1)
            node, depth, index = 0, 0, 1
            while depth < len(stop):
                char = stop[depth]
                along = range_stops[index] if index < len(range_stops) else ""
                if depth < len(along) and along[depth] == char:
                    node += 1
                else:
                    child = branch.get(node, {}).get(char)
                    if child is None:
                        break
                    node, index = child, range_of_base[child]
                depth += 1
            if depth < len(stop):  # new nodes size .. size + len(stop) - depth - 1, along this stop string
                if size > 1:  # else: node 1 is the root's chain child
                    branch.setdefault(node, {})[stop[depth]] = size
                range_of_base[size] = len(bases)
                bases.append(size)
                base_depths.append(depth + 1)
                range_stops.append(stop)
                size += len(stop) - depth
                node = size - 1
            terminal[node] = stop
        # chain[n]: the character to node n + 1 along n's range; "\0" for a range's last node (a leaf, which
        # completes a stop string: the matcher never steps from it)
        self.chain = "".join([stops[0][0]] + [range_stops[r][base_depths[r]:] + "\0" for r in range(1, len(bases))])
        self.branch = branch
        self.terminal = terminal
        self.bases = bases
        self.base_depths = base_depths
        self.fail = array("i", bytes(4 * size))
        self.out = bytearray(size)
        self._link({base - 1 for base in bases[2:]} | {size - 1})
        firsts = sorted({stop[0] for stop in stops})
        self.first = firsts[0] if len(firsts) == 1 else ""  # the one character that starts every stop string
        self.starts = None if self.first else re.compile("[" + "".join(re.escape(c) for c in firsts) + "]")

    def _link(self, leaves: set[int]) -> None:
        """Failure links and match flags, breadth first (a node's links need those of shallower nodes)."""
        chain, branch, fail, out, terminal = self.chain, self.branch, self.fail, self.out, self.terminal

        def target_of(node: int, char: str) -> int:
            """The node of the longest proper suffix of ``node``'s string + ``char`` that is in the trie."""
            target = fail[node]
            while True:
                if chain[target] == char and target not in leaves:
                    return target + 1
                more = branch.get(target)
                if more and char in more:
                    return more[char]
                if target == 0:
                    return 0
                target = fail[target]

        level = [1, *branch.get(0, {}).values()]
        for node in level:
            out[node] = node in terminal
        while level:
            deeper: list[int] = []
            for node in level:
                if node not in leaves:  # the chain child, without a tuple per node (stop strings may be long)
                    found = fail[node + 1] = target_of(node, chain[node])
                    out[node + 1] = out[found] or node + 1 in terminal
                    deeper.append(node + 1)
                more = branch.get(node)
                if more:
                    for char, child in more.items():
                        found = fail[child] = target_of(node, char)
                        out[child] = out[found] or child in terminal
                        deeper.append(child)
            level = deeper

    def start(self, text: str, index: int) -> int:
        """Where the next character that starts a stop string is in ``text[index:]``; -1 when none is."""
        if self.first:
            return text.find(self.first, index)
        match = self.starts.search(text, index)  # type: ignore[union-attr]
        return -1 if match is None else match.start()

    def depth(self, node: int) -> int:
        """Length of node ``node``'s string."""
        if node == 0:
            return 0
        index = bisect_right(self.bases, node) - 1
        return self.base_depths[index] + node - self.bases[index]

    def longest_stop(self, node: int) -> str:
        """The longest stop string that is a suffix of node ``node``'s string (``out[node]`` is set)."""
        while node not in self.terminal:
            node = self.fail[node]
        return self.terminal[node]


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_automaton(stops: tuple[str, ...]) -> _Automaton:
    return _Automaton(stops)


def automaton(stop: list[str]) -> _Automaton | None:
    """The automaton of the non-empty stop strings (None when there are none); small ones are shared."""
    stops = tuple(sorted({s for s in stop if s}, key=lambda s: (-len(s), s)))
    if not stops:
        return None
    if sum(map(len, stops)) <= _CACHED_TOTAL_CHARS:
        return _cached_automaton(stops)
    return _Automaton(stops)


class StopStringMatcher:
    """Holds back text that could be the start of a stop string until it matches or diverges."""

    __slots__ = ("_automaton", "_include", "_node", "_held", "_stopped_by")

    def __init__(self, stop: list[str], *, include_stop_str_in_output: bool = False) -> None:
        self._automaton = automaton(stop)
        self._include = include_stop_str_in_output
        self._node = 0  # automaton state: the node whose string is the held-back text
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
        auto = self._automaton
        if auto is None:
            return text, False
        if self._stopped_by is not None:
            return "", True
        node = self._node
        end = len(text)
        if node == 0:  # nothing held: skip to the first character that can start a stop string, in C
            first = auto.first
            if first:
                index = text.find(first)
            else:
                match = auto.starts.search(text)  # type: ignore[union-attr]
                index = -1 if match is None else match.start()
            if index < 0:
                return text, False
        elif auto.chain.startswith(text, node) and auto.out.find(1, node + 1, node + end + 1) < 0:
            node += end  # the text goes on along the held stop string's chain and completes nothing: no steps
            index = end
        else:
            index = 0
        chain, branch, fail, out = auto.chain, auto.branch, auto.fail, auto.out
        while index < end:
            char = text[index]
            index += 1
            if chain[node] == char:  # one automaton step: the child by `char`, else follow failure links
                node += 1
            else:
                while True:
                    more = branch.get(node)
                    if more is not None and char in more:
                        node = more[char]
                        break
                    if node == 0:
                        break
                    node = fail[node]
                    if chain[node] == char:
                        node += 1
                        break
            if out[node]:
                return self._matched(auto.longest_stop(node), text, index)
            if node == 0:
                index = auto.start(text, index)
                if index < 0:
                    break
        self._node = node
        held = self._held
        if node == 0:
            self._held = ""
            return (held + text if held else text), False
        keep = auto.depth(node)
        cut = len(held) + end - keep  # what is released of held + text
        if cut >= len(held):
            self._held = text[cut - len(held):]
            return held + text[:cut - len(held)], False
        self._held = held[cut:] + text
        return held[:cut], False

    def _matched(self, stop: str, text: str, index: int) -> tuple[str, bool]:
        """``stop`` ends right before ``text[index]``: release the text before it (or through it)."""
        self._stopped_by = stop
        held, self._held = self._held, ""
        self._node = 0
        cut = len(held) + index - (0 if self._include else len(stop))
        if cut >= len(held):
            return held + text[:cut - len(held)], True
        return held[:cut], True

    def flush(self) -> str:
        """At the end of the stream (no match), release what was held back."""
        held, self._held = self._held, ""
        self._node = 0
        return held
