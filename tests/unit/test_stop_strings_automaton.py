"""The stop-string matcher's automaton: same output as a check after every character, memory linear in the stop
strings (issue 13 item 2: a 16 KB stop string used to cost ~105 MB, a 1 MB one killed the HTTP worker)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from frontend.postprocess.stop_strings import StopStringMatcher, automaton  # noqa: E402


def reference(stops: list[str], text: str, include: bool) -> tuple[str, str | None]:
    """The rule as documented: check after every character; the longest stop string ending there wins."""
    stops = [s for s in stops if s]
    for end in range(1, len(text) + 1):
        ending = [s for s in stops if text.endswith(s, 0, end)]
        if ending:
            stop = max(ending, key=len)
            return text[:end if include else end - len(stop)], stop
    return text, None


def longest_partial(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string (what is held back)."""
    return max((n for s in stops for n in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:n])), default=0)


def random_case(rng: random.Random) -> tuple[list[str], str, list[str], bool]:
    """Stop strings with shared prefixes, suffixes and periods; a text full of their prefixes and near misses."""
    alphabet = rng.choice(["ab", "abc", "ab c", "a\0b", "aé日🙂"])
    stops = ["".join(rng.choices(alphabet, k=rng.randint(1, 9))) for _ in range(rng.randint(1, 6))]
    for _ in range(rng.randint(0, 3)):  # pieces of other stop strings: prefixes, suffixes, infixes
        base = rng.choice(stops)
        i = rng.randint(0, len(base) - 1)
        stops.append(base[i:rng.randint(i + 1, len(base))])
    if rng.random() < 0.3:
        stops.append(rng.choice(["aab", "abab", "aaaa", "abaab"]) * rng.randint(1, 3))  # periodic: long fail chains
    if rng.random() < 0.1:
        stops.append("")
    pieces = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        stop = rng.choice(stops)
        if kind < 0.4 and stop:
            pieces.append(stop[:rng.randint(1, len(stop))])  # a prefix (maybe the whole stop string)
        elif kind < 0.6 and stop:
            i = rng.randrange(len(stop))
            pieces.append(stop[:i] + rng.choice(alphabet) + stop[i + 1:])  # a near miss
        else:
            pieces.append("".join(rng.choices(alphabet, k=rng.randint(0, 6))))
    text = "".join(pieces)
    chunks, pos = [], 0
    style = rng.random()
    while pos < len(text):
        size = 1 if style < 0.2 else len(text) if style < 0.3 else rng.randint(0, 8)
        chunks.append(text[pos:pos + size])
        pos += size
    return stops, text, chunks, rng.random() < 0.5


@pytest.mark.parametrize("seed", range(400))
def test_same_as_a_check_after_every_character(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5):
        stops, text, chunks, include = random_case(rng)
        matcher = StopStringMatcher(stops, include_stop_str_in_output=include)
        fed = emitted = ""
        for chunk in chunks:
            released, matched = matcher.feed(chunk)
            fed += chunk
            emitted += released
            if matched:
                break
            assert emitted == fed[:len(fed) - longest_partial(fed, [s for s in stops if s])], (stops, chunks)
        else:
            emitted += matcher.flush()
        expected_text, expected_stop = reference(stops, text, include)
        assert (emitted, matcher.stopped_by) == (expected_text, expected_stop), (stops, chunks, include)


def test_matchers_sharing_a_cached_automaton_keep_their_own_state() -> None:
    first, second = StopStringMatcher(["</answer>"]), StopStringMatcher(["</answer>"])
    assert first._automaton is second._automaton
    assert first.feed("x </ans") == ("x ", False)
    assert second.feed("y </answer") == ("y ", False)
    assert first.feed("wer> more") == ("", True) and first.stopped_by == "</answer>"
    assert second.feed("s") == ("</answers", False)


def test_memory_is_linear_in_the_stop_strings() -> None:
    """4 stop strings of 16 KB: the quadratic prefix table cost ~105 MB each; the automaton ~6 bytes a char."""
    rng = random.Random(7)
    stops = ["".join(rng.choices("abcdefgh ", k=16 * 1024)) for _ in range(4)]
    tracemalloc.start()
    try:
        matcher = StopStringMatcher(stops)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = sum(map(len, stops))
    assert current < 12 * total and peak < 20 * total, (current, peak, total)
    stop = stops[3]
    chunks = [stop[i:i + 7] for i in range(0, len(stop), 7)]
    assert "".join(matcher.feed(chunk)[0] for chunk in ["head ", *chunks]) == "head "
    assert matcher.stopped_by == stop


def test_one_megabyte_stop_string_in_a_fresh_process() -> None:
    """A 1 MB stop string (the issue's OOM): the peak RSS grows by well under 64 MB; it matches when fed in pieces and a
    near miss is released whole. Run in a child with an address-space limit, so a regression fails there instead
    of exhausting this machine's memory."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from frontend.postprocess.stop_strings import StopStringMatcher

        def rss():  # peak resident set size so far, bytes
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        stop = ("abcdefghij" * 104858)[:1 << 20]
        near = stop[:-1] + "X"
        base = rss()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            vsize = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vsize + (1 << 30), hard))
        matcher = StopStringMatcher([stop, "zz"])
        grown = rss() - base
        out = "".join(matcher.feed(near[i:i + 4096])[0] for i in range(0, len(near), 4096)) + matcher.flush()
        near_ok = out == near and matcher.stopped_by is None
        matcher = StopStringMatcher([stop, "zz"])
        out = "".join(matcher.feed(("x" + stop)[i:i + 4096])[0] for i in range(0, len(stop) + 1, 4096))
        print(json.dumps({{"grown": grown, "near_ok": near_ok, "match_ok": out == "x" and matcher.stopped_by == stop}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["near_ok"] and report["match_ok"], report
    assert report["grown"] < 64 * 2**20, report


def test_automaton_of_no_stop_strings_is_none() -> None:
    assert automaton([]) is None and automaton(["", ""]) is None
