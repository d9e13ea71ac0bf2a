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
from frontend.protocol.engine import RequestOutput, TokenLogprob
from frontend.protocol.openai import ChatChunkChoice, ChatCompletionChunk, ChatDelta
from frontend.transport.end_of_turn import EndOfTurn, TurnWriter

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
        self.events: list[bytes] = []  # what the client got: the writer's writes, or the Python path's events
        self.writer = TurnWriter(self, EndOfTurn(NoLoop()))
        self.writer.closed = not accept  # a client that has gone
        self.output_ids: list[int] = []
        self.cancelled = 0
        self.plain = PlainTokens(self.pipeline, self.observer, self.timing, self.event.prefix, self.event.suffix,
                                 self.writer, self.output_ids, self.cancel) if native else None
        self.native_writes = 0

    def send_bytes(self, data: bytes) -> list:
        """The writer's transport (Granian's send: its awaitable ends at once)."""
        self.events.append(data)
        return []

    def cancel(self) -> None:
        self.cancelled += 1

    def feed(self, token_ids: list[int]) -> None:
        if self.plain is not None and self.observer.first_token_seen:
            outcome = self.plain.write(token_ids)
            self.writer.flush()
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


class NoLoop:
    """The end of the turn never comes by itself: the test flushes the writer."""

    def call_soon(self, callback) -> None:
        pass


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
@given(token_ids=st.lists(st.one_of(st.integers(0, 2000), st.integers(8180, 8300)), min_size=1, max_size=60),
       sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_any_token_ids_give_the_same_stream(tokenizer, token_ids, sizes):
    """Any ids (byte tokens that make invalid UTF-8 too, special tokens and ids past the vocabulary's 8,192, which
    the piece table does not hold), cut into outputs of any sizes."""
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


def test_take_writes_a_plain_output_and_keeps_its_tokens_for_a_migration(tokenizer):
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    there = tokenizer.encode(" there").ids
    assert choice.plain.take(RequestOutput("r", there))
    choice.writer.flush()
    assert choice.events[-1] == choice.event(" there") and choice.output_ids == there
    assert choice.pipeline.completion_tokens == len(tokenizer.encode("Hi").ids) + len(there)


@pytest.mark.parametrize("output", [
    RequestOutput("r", [1000], finish_reason="length"),
    RequestOutput("r", [1000], finish_reason="error", error="engine died", retryable=True),
    RequestOutput("r", [1000], logprobs=[TokenLogprob(1000, -0.5)]),
    RequestOutput("r", [1000], cached_tokens=3),
    RequestOutput("r", []),
], ids=["finished", "failed", "logprobs", "cached-tokens", "no-token"])
def test_take_leaves_an_output_that_is_not_only_text_to_the_python_path(tokenizer, output):
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    before = (choice.window(), choice.pipeline.completion_tokens, len(choice.events))
    assert not choice.plain.take(output)
    assert (choice.window(), choice.pipeline.completion_tokens, len(choice.events)) == before
    assert choice.output_ids == [] and choice.cancelled == 0


def test_take_waits_for_a_writer_past_its_limit(tokenizer):
    """A writer at its ``write_limit`` (the backlog check is due, which waits: the Python path's) is not ready."""
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    choice.writer.write_limit = choice.writer.written
    assert not choice.plain.take(RequestOutput("r", tokenizer.encode(" there").ids))
    assert choice.output_ids == []


def test_take_leaves_an_output_for_a_client_that_has_gone_to_the_python_path(tokenizer):
    """The Python path's write sees the client gone and ends the stream."""
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    choice.writer.closed = True
    assert not choice.plain.take(RequestOutput("r", tokenizer.encode(" there").ids))
    assert choice.output_ids == []


def test_a_failure_in_take_cancels_its_stream_only(tokenizer):
    """An exception while writing (a bug) is logged and cancels this stream; the gateway goes on with the other
    outputs of the worker's message."""
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    choice.observer.last_token_at = "not a time"
    assert choice.plain.take(RequestOutput("r", tokenizer.encode(" there").ids))
    assert choice.cancelled == 1


@pytest.mark.parametrize("token_id", [-1, 2**63, 2**64 - 1], ids=["negative", "past-int64", "max-uint64"])
def test_an_id_no_tokenizer_knows_cancels_its_stream_only(tokenizer, token_id):
    """A worker's id that is no int64 vocabulary index (msgpack carries up to uint64) cannot be decoded: ``take``
    cancels that stream and leaves its window and counts as they were."""
    choice = Choice(tokenizer, native=True)
    choice.feed(tokenizer.encode("Hi").ids)
    ids, *offsets = choice.window()
    before = (list(ids), offsets, choice.pipeline.completion_tokens, len(choice.events))  # a copy of the window
    assert choice.plain.take(RequestOutput("r", [token_id]))
    assert choice.cancelled == 1 and choice.output_ids == []
    ids, *offsets = choice.window()
    assert (ids, offsets, choice.pipeline.completion_tokens, len(choice.events)) == before
