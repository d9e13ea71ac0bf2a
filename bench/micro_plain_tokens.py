"""Micro-benchmark of the streamed plain token: the native path against the Python path it stands for, same run.

    python bench/micro_plain_tokens.py [--tokens 20000] [--rounds 5]

One streamed chat choice on the bundled tokenizer, fed one token per engine output (an English story, so every
token is self-contained). The Python path is what ``Generation`` did before ``PlainTokens``: ``OutputPipeline.feed``,
the metrics observer's and the worker timing's ``tokens``, the door's ``TextEvent``, the writer's ``write_soon``.
The native path is ``PlainTokens.take`` (``native/plain_tokens.pyx``), as the gateway calls it for each output. Both
write to a ``TurnWriter`` (``native/end_of_turn.pyx``) whose transport keeps the bytes, flushed after each output
(each output is a turn of its own at engine pace). Prints the median over ``--rounds`` of the µs per token of each
and their ratio. A tight loop keeps everything in cache: in the server the
same Python costs about 2.5 times as much (docs/BENCHMARKS.md, "Paced streaming").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer

try:
    from frontend.config.options import BUNDLED_MODEL_PATH
except ImportError:  # run from a checkout without the package on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from frontend.config.options import BUNDLED_MODEL_PATH

from frontend.http.reply import TEXT_SLOT, TextEvent
from frontend.observability.metrics import GenerationObserver, Metrics, WorkerTiming
from frontend.postprocess.pipeline import OutputPipeline
from frontend.postprocess.plain_tokens import PlainTokens
from frontend.protocol.engine import RequestOutput
from frontend.protocol.openai import ChatChunkChoice, ChatCompletionChunk, ChatDelta
from frontend.transport.end_of_turn import EndOfTurn, TurnWriter

STORY = "The lighthouse keeper climbed the stairs every evening to light the lamp for the ships at sea. "


class Stream:
    """One choice's pipeline, metrics and event template, its first token already counted."""

    def __init__(self, tokenizer: Tokenizer, first: int) -> None:
        self.metrics = Metrics()
        self.pipeline = OutputPipeline(tokenizer, stop=[], include_stop_str_in_output=False, skip_special_tokens=True)
        self.observer = GenerationObserver(self.metrics, "tiny", True)
        self.timing = WorkerTiming(self.metrics, time.perf_counter(), 16)
        self.event = TextEvent(ChatCompletionChunk("chatcmpl-1", 1, "tiny", [ChatChunkChoice(0, ChatDelta(
            content=TEXT_SLOT))]))
        self.written: list[bytes] = []
        self.writer = TurnWriter(self, EndOfTurn(NoLoop()))
        self.pipeline.feed([RequestOutput("r", [first])])
        self.observer.tokens(1)
        self.timing.tokens("worker-1", 1)

    def send_bytes(self, data: bytes) -> list:
        """The writer's transport (Granian's send: its awaitable ends at once)."""
        self.written.append(data)
        return []

    def python_path(self, outputs: list[RequestOutput]) -> None:
        pipeline, observer, timing, event, writer = self.pipeline, self.observer, self.timing, self.event, self.writer
        for output in outputs:
            before = pipeline.completion_tokens
            delta = pipeline.feed([output])
            count = pipeline.completion_tokens - before
            observer.tokens(count)
            timing.tokens("worker-1", count)
            if delta.text:
                writer.write_soon(event(delta.text))
            writer.flush()

    def native_path(self, outputs: list[RequestOutput]) -> None:
        writer = self.writer
        take = PlainTokens(self.pipeline, self.observer, self.timing, self.event.prefix, self.event.suffix,
                           writer).take
        for output in outputs:
            if not take(output):
                raise AssertionError("a token of the story was not written natively")
            writer.flush()


class NoLoop:
    """The benchmark flushes the writer itself, once per output."""

    def call_soon(self, callback) -> None:
        pass


def _per_token_us(tokenizer: Tokenizer, token_ids: list[int], native: bool) -> tuple[float, bytes]:
    stream = Stream(tokenizer, token_ids[0])
    outputs = [RequestOutput("r", [token_id]) for token_id in token_ids[1:]]
    started = time.perf_counter()
    (stream.native_path if native else stream.python_path)(outputs)
    elapsed = time.perf_counter() - started
    return elapsed / len(outputs) * 1e6, b"".join(stream.written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=20000, help="tokens per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each path, alternating (default 5)")
    args = parser.parse_args(argv)
    tokenizer = Tokenizer.from_file(f"{BUNDLED_MODEL_PATH}/tokenizer.json")
    story = tokenizer.encode(STORY).ids
    token_ids = (story * (args.tokens // len(story) + 2))[:args.tokens]
    python_us, native_us = [], []
    for _ in range(args.rounds):
        python, python_bytes = _per_token_us(tokenizer, token_ids, native=False)
        native, native_bytes = _per_token_us(tokenizer, token_ids, native=True)
        if python_bytes != native_bytes:
            raise AssertionError("the two paths wrote different events")
        python_us.append(python)
        native_us.append(native)
    python, native = statistics.median(python_us), statistics.median(native_us)
    print(f"streamed plain token, {args.tokens} tokens x {args.rounds} rounds (medians):")
    print(f"  python path  {python:6.2f} us/token")
    print(f"  native path  {native:6.2f} us/token   ({native / python:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
