"""Unit tests for frontend.postprocess.stop_strings (stop strings over streamed text)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # no packaging config yet: make `frontend` importable from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from frontend.postprocess.stop_strings import StopStringMatcher  # noqa: E402


def run(stop: list[str], chunks: list[str], include: bool = False) -> tuple[list[str], str | None]:
    """Feed the chunks until a match; flush at the end when there was none. Returns (emitted pieces, stop)."""
    m = StopStringMatcher(stop, include_stop_str_in_output=include)
    out = []
    for chunk in chunks:
        text, matched = m.feed(chunk)
        out.append(text)
        if matched:
            assert m.stopped_by is not None
            return out, m.stopped_by
    out.append(m.flush())
    assert m.stopped_by is None
    return out, None


def reference(stop: list[str], text: str, include: bool = False) -> tuple[str, str | None]:
    """The documented rule on the whole text: the match that ends first wins; same end -> the longer one."""
    best: tuple[int, int, str] | None = None  # (end, -len, stop)
    for s in {s for s in stop if s}:
        start = text.find(s)
        if start >= 0:
            cand = (start + len(s), -len(s), s)
            best = cand if best is None or cand < best else best
    if best is None:
        return text, None
    end, neg_len, s = best
    return text[: end if include else end + neg_len], s


def test_no_stop_strings_pass_text_through_unchanged() -> None:
    m = StopStringMatcher([])
    text = "anything at all"
    emitted, matched = m.feed(text)
    assert emitted is text and not matched
    assert m.flush() == "" and m.stopped_by is None


def test_empty_stop_strings_are_ignored() -> None:
    assert run(["", ""], ["abc", "def"]) == (["abc", "def", ""], None)
    assert run(["", "d"], ["abc", "def"]) == (["abc", ""], "d")


def test_stop_in_one_chunk() -> None:
    assert run(["STOP"], ["hello STOP world"]) == (["hello "], "STOP")


def test_stop_across_chunk_boundaries() -> None:
    out, stop = run(["</answer>"], ["The answer is 42", "</an", "sw", "er>", " ignored"])
    assert stop == "</answer>"
    assert out == ["The answer is 42", "", "", ""]


def test_near_miss_is_released_intact() -> None:
    out, stop = run(["</answer>"], ["a </an", "swor", " b"])
    assert stop is None
    assert out == ["a ", "</answor", " b", ""]
    assert "".join(out) == "a </answor b"


def test_held_back_is_only_the_longest_partial_suffix() -> None:
    m = StopStringMatcher(["abcabd"])
    assert m.feed("xxabcab") == ("xx", False)  # "abcab" could still become "abcabd"
    assert m.feed("c") == ("abc", False)  # "abcabc" diverges, but its suffix "abc" is a new start
    assert m.feed("abd") == ("", True)
    assert m.stopped_by == "abcabd"


def test_partial_suffix_restarts_inside_held_text() -> None:
    m = StopStringMatcher(["aab"])
    assert m.feed("a") == ("", False)
    assert m.feed("a") == ("", False)
    assert m.feed("a") == ("a", False)  # "aaa": "aa" is still a prefix of "aab"
    assert m.feed("b") == ("", True)  # "aa" + "b": the match starts where the held text starts
    assert m.stopped_by == "aab"


def test_multiple_stop_strings_first_completed_wins() -> None:
    assert run(["world", "lo w"], ["hello world"]) == (["hel"], "lo w")
    assert run(["xyz", "hello"], ["say hel", "lo xyz"]) == (["say ", ""], "hello")


def test_overlapping_stops_the_one_completed_first_wins() -> None:
    # "bc" is complete before "abcd" is: same result however the text is split.
    assert run(["abcd", "bc"], ["abcd"]) == (["a"], "bc")
    assert run(["abcd", "bc"], ["ab", "cd"]) == (["", "a"], "bc")


def test_same_end_the_longer_stop_wins() -> None:
    assert run(["b", "ab"], ["xab"]) == (["x"], "ab")
    assert run(["b", "ab"], ["xa", "b"]) == (["x", ""], "ab")
    assert run(["b", "ab"], ["xab"], include=True) == (["xab"], "ab")


def test_stop_that_is_a_prefix_of_another_matches_first() -> None:
    assert run(["ab", "abc"], ["xabc"]) == (["x"], "ab")
    assert run(["ab", "abc"], ["xa", "bc"]) == (["x", ""], "ab")


def test_include_stop_str_in_output() -> None:
    out, stop = run(["</s>"], ["hi </", "s> rest"], include=True)
    assert stop == "</s>"
    assert "".join(out) == "hi </s>"


def test_stop_at_the_very_start() -> None:
    assert run(["Human:"], ["Human: hi"]) == ([""], "Human:")
    assert run(["Human:"], ["Hu", "man:"]) == (["", ""], "Human:")
    assert run(["Human:"], ["Human:"], include=True) == (["Human:"], "Human:")


def test_stop_string_longer_than_any_chunk() -> None:
    stop = "<|end_of_the_turn|>"
    chunks = ["ok", *stop, "more"]
    out, matched = run([stop], chunks)
    assert matched == stop and "".join(out) == "ok"


def test_flush_releases_a_partial_stop_at_end_of_stream() -> None:
    m = StopStringMatcher(["Observation:"])
    assert m.feed("Thought: done. Obs") == ("Thought: done. ", False)
    assert m.feed("erva") == ("", False)
    assert m.flush() == "Observa"
    assert m.stopped_by is None
    assert m.flush() == ""


def test_calls_after_a_match_return_nothing() -> None:
    m = StopStringMatcher(["x"])
    assert m.feed("abxcd") == ("ab", True)
    assert m.feed("more") == ("", True)
    assert m.flush() == ""
    assert m.stopped_by == "x"


def test_non_ascii_stop_strings() -> None:
    assert run(["日本"], ["héllo 日", "本語"]) == (["héllo ", ""], "日本")
    assert run(["🙂🙂"], ["a🙂", "b🙂", "🙂c"]) == (["a", "🙂b", ""], "🙂🙂")


ALPHABET = "ab c"


@pytest.mark.parametrize("seed", range(300))
def test_randomized_against_reference(seed: int) -> None:
    rng = random.Random(seed)
    stops = ["".join(rng.choices(ALPHABET, k=rng.randint(0, 5))) for _ in range(rng.randint(0, 4))]
    text = "".join(rng.choices(ALPHABET, k=rng.randint(0, 60)))
    include = rng.random() < 0.5
    chunks, pos = [], 0
    while pos < len(text):
        n = rng.randint(0, 7)
        chunks.append(text[pos : pos + n])
        pos += n
    out, stop = run(stops, chunks, include)
    assert ("".join(out), stop) == reference(stops, text, include)


def longest_partial(text: str, stops: list[str]) -> int:
    """Naive: length of the longest suffix of text that is a proper prefix of a stop string."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


@pytest.mark.parametrize("seed", range(100))
def test_randomized_holds_back_the_minimum(seed: int) -> None:
    rng = random.Random(seed)
    stops = ["".join(rng.choices(ALPHABET, k=rng.randint(1, 6))) for _ in range(rng.randint(1, 3))]
    m = StopStringMatcher(stops)
    fed = emitted = ""
    for _ in range(30):
        chunk = "".join(rng.choices(ALPHABET, k=rng.randint(0, 4)))
        fed += chunk
        text, matched = m.feed(chunk)
        emitted += text
        if matched:
            break
        assert emitted == fed[: len(fed) - longest_partial(fed, stops)]
