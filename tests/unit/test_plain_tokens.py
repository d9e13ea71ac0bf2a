"""The native plain-token path (``frontend.postprocess.plain_tokens``) against the Python path it stands for.

Two copies of one streamed choice are fed the same engine outputs: one through ``OutputPipeline.feed``, the
metrics observer, the worker timing and the door's ``TextEvent`` (the Python path), the other through
``PlainTokens.write``, falling back to the Python path wherever it answers ``NOT_PLAIN``. Their events, token
counts, detokenizer windows and metrics must agree.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer

from frontend.config.options import BUNDLED_MODEL_PATH
from frontend.http.reply import TEXT_SLOT, TextEvent
from frontend.observability.metrics import HISTOGRAMS, GenerationObserver, Metrics, WorkerTiming
from frontend.postprocess.pipeline import OutputPipeline
from frontend.postprocess.plain_tokens import CLIENT_GONE, NOT_PLAIN, WRITTEN, PlainTokens
from frontend.protocol.engine import RequestOutput
from frontend.protocol.openai import ChatChunkChoice, ChatCompletionChunk, ChatDelta

WORKER = "worker-1"
TEXT = 'Plain words, then "quotes", a back\\slash, a tab\tand a newline\n, héllo wörld, 你好, 🎉 and <|im_end|> end.'


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(f"{BUNDLED_MODEL_PATH}/tokenizer.json")


class Choice:
    """One streamed choice's state, written by the Python path or (``native``) by ``PlainTokens`` first."""

    def __init__(self, tokenizer: Tokenizer, native: bool, accept: bool = True) -> None:
        self.metrics = Metrics()
        self.pipeline = OutputPipeline(tokenizer, stop=[], include_stop_str_in_output=False, skip_special_tokens=True)
        self.observer = GenerationObserver(self.metrics, "tiny", True)
        self.timing = WorkerTiming(self.metrics, time.perf_counter(), 10)
        self.event = TextEvent(ChatCompletionChunk("chatcmpl-1", 1, "tiny", [ChatChunkChoice(0, ChatDelta(
            content=TEXT_SLOT))]))
        self.events: list[bytes] = []
        self.accept = accept
        self.plain = PlainTokens(self.pipeline, self.observer, self.timing, self.event.prefix, self.event.suffix,
                                 self.write_soon) if native else None
        self.native_writes = 0

    def write_soon(self, data: bytes) -> bool:
        self.events.append(data)
        return self.accept

    def feed(self, token_ids: list[int]) -> None:
        if self.plain is not None and self.observer.first_token_seen:
            outcome = self.plain.write(token_ids)
            if outcome != NOT_PLAIN:
                assert outcome == WRITTEN
                self.native_writes += 1
                return
        before = self.pipeline.completion_tokens
        delta = self.pipeline.feed([RequestOutput("r", token_ids)])
        count = self.pipeline.completion_tokens - before
        self.observer.tokens(count)
        self.timing.tokens(WORKER, count)
        if delta.text:
            self.events.append(self.event(delta.text))

    def window(self) -> tuple:
        detokenizer = self.pipeline.detokenizer
        return detokenizer._ids, detokenizer._read, detokenizer._done_len, detokenizer._held_steps

    def itl(self) -> list:
        return self.metrics.histograms[("inter_token_latency_seconds", self.observer.labels)]


def _steps(token_ids: list[int], sizes: tuple[int, ...]) -> list[list[int]]:
    steps, at, turn = [], 0, 0
    while at < len(token_ids):
        size = sizes[turn % len(sizes)]
        steps.append(token_ids[at:at + size])
        at, turn = at + size, turn + 1
    return steps


@pytest.mark.parametrize("sizes", [(1,), (2,), (3, 1), (1, 4, 2)])
def test_the_native_path_writes_what_the_python_path_writes(tokenizer, sizes):
    """Byte tokens of one character cut across outputs, JSON escapes, non-ASCII text, a skipped special token:
    the same events, counts, windows and number of latency observations, with most outputs written natively."""
    token_ids = tokenizer.encode(TEXT).ids * 3
    python, native = Choice(tokenizer, native=False), Choice(tokenizer, native=True)
    for step in _steps(token_ids, sizes):
        python.feed(step)
        native.feed(step)
    assert b"".join(native.events) == b"".join(python.events)
    assert native.pipeline.completion_tokens == python.pipeline.completion_tokens == len(token_ids)
    assert native.window() == python.window()
    assert sum(native.itl()[:-1]) == sum(python.itl()[:-1]) == len(token_ids) - len(_steps(token_ids, sizes)[0])
    assert native.native_writes > len(_steps(token_ids, sizes)) // 2
    assert set(native.metrics.latest) == set(python.metrics.latest)


def test_a_token_that_is_part_of_a_character_changes_nothing(tokenizer):
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)  # the first output: the Python path
    partial = [i for i in tokenizer.encode("é").ids if "\ufffd" in tokenizer.decode([i])][:1]
    assert partial, "the bundled tokenizer splits é into byte tokens"
    before = (choice.window(), choice.pipeline.completion_tokens, list(choice.itl()), len(choice.events))
    assert choice.plain.write(partial) == NOT_PLAIN
    assert (choice.window(), choice.pipeline.completion_tokens, list(choice.itl()), len(choice.events)) == before


def test_a_window_that_is_not_at_a_clean_boundary_goes_the_python_way(tokenizer):
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    first_byte = tokenizer.encode("é").ids[:1]
    choice.feed(first_byte)  # held: the window now ends inside a character
    assert choice.plain.write(tokenizer.encode(" there").ids) == NOT_PLAIN


def test_the_latency_goes_into_its_bucket_and_the_latest_gauge(tokenizer):
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    choice.observer.last_token_at = choice.timing.last_at = time.perf_counter() - 0.012  # 12 ms ago
    assert choice.plain.write(tokenizer.encode(" there").ids[:1]) == WRITTEN
    bounds = HISTOGRAMS["inter_token_latency_seconds"][1]
    bucket = next(index for index, bound in enumerate(bounds) if bound >= 0.012)
    assert choice.itl()[bucket] == 1 and 0.012 <= choice.itl()[-1] < 0.013
    value, _ = choice.metrics.latest[("worker_last_inter_token_latency_seconds", choice.timing.labels)]
    assert 0.012 <= value < 0.013


def test_a_writer_that_refuses_is_reported(tokenizer):
    choice = Choice(tokenizer, native=True, accept=False)
    choice.feed(tokenizer.encode("Hi").ids)
    assert choice.plain.write(tokenizer.encode(" there").ids) == CLIENT_GONE


@settings(max_examples=200, deadline=None)
@given(token_ids=st.lists(st.integers(0, 2000), min_size=1, max_size=60),
       sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_any_token_ids_give_the_same_stream(tokenizer, token_ids, sizes):
    """Any ids (byte tokens that make invalid UTF-8 too), cut into outputs of any sizes."""
    python, native = Choice(tokenizer, native=False), Choice(tokenizer, native=True)
    for step in _steps(token_ids, tuple(sizes)):
        python.feed(step)
        native.feed(step)
    assert b"".join(native.events) == b"".join(python.events)
    assert native.pipeline.completion_tokens == python.pipeline.completion_tokens
    assert native.window() == python.window()


def test_before_the_first_token_the_python_path_times_it(tokenizer):
    """A worker whose first output carried no token: its first token is the time to first token, not an ITL."""
    choice = Choice(tokenizer, native=True)
    assert choice.plain.write(tokenizer.encode("Hi").ids) == NOT_PLAIN
    assert choice.pipeline.completion_tokens == 0 and not choice.events
