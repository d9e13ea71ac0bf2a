"""The per-choice output pipeline: engine token batches in, text deltas and a finish reason out.

Stages run in order on every batch: incremental detokenization, then stop strings (held back until they
match or diverge), then any further ``TextStage`` (each takes the text released by the previous stage and
returns what it releases in turn), then, when the request has one, the output parser (``frontend.parsers``:
reasoning, then tool calls), which turns the text into ordered content / reasoning / tool-call segments.
Without a parser a delta carries text only and no per-segment work is done.
"""

from __future__ import annotations

from typing import Protocol

from tokenizers import Tokenizer

from ..parsers.base import CONTENT, OutputParser, Segment
from ..protocol.engine import RequestOutput, TokenLogprob
from ..protocol.errors import RequestError, worker_failure
from .detokenizer import IncrementalDetokenizer
from .stop_strings import StopStringMatcher


class TextStage(Protocol):
    """A stage that transforms released text; ``finish`` releases what it still holds."""

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


class Delta:
    """What one batch produced for the client.

    With an output parser, ``segments`` holds the parsed output in order and ``text`` only its content.
    ``error`` is set when the worker failed the request (a 400 or 502 to report).
    """

    __slots__ = ("text", "finish_reason", "logprobs", "error", "segments")

    def __init__(self, text: str, finish_reason: str | None, logprobs: list[TokenLogprob] | None,
                 error: RequestError | None, segments: list[Segment] | None = None) -> None:
        self.text = text
        self.finish_reason = finish_reason
        self.logprobs = logprobs
        self.error = error
        self.segments = segments


class OutputPipeline:
    """Turns one request's engine outputs into client-visible deltas."""

    def __init__(self, tokenizer: Tokenizer, *, stop: list[str], include_stop_str_in_output: bool,
                 skip_special_tokens: bool, prompt_tail: list[int] | None = None,
                 stages: list[TextStage] | None = None, parser: OutputParser | None = None) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens,
                                                  prompt_tail=prompt_tail)
        self.stop = StopStringMatcher(stop, include_stop_str_in_output=include_stop_str_in_output) if stop else None
        self.stages = stages or []
        self.parser = parser
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self.stopped_by_string = False

    @property
    def plain_text(self) -> bool:
        """Whether a delta is the detokenized text alone (no stop strings, stages or parser) and the detokenizer
        has a piece table: ``plain_tokens.PlainTokens`` may then feed this pipeline's plain outputs."""
        return self.stop is None and not self.stages and self.parser is None and self.detokenizer.pieces is not None

    def feed(self, outputs: list[RequestOutput]) -> Delta:
        """Process every output of a batch; stops at the first finish (engine's or a stop string's)."""
        text_parts: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        error = None
        for output in outputs:
            self.completion_tokens += len(output.token_ids)
            if output.cached_tokens:
                self.cached_tokens = output.cached_tokens
            if output.logprobs:
                logprobs = (logprobs or []) + output.logprobs
            text = self.detokenizer.step(output.token_ids) if output.token_ids else ""
            finished = output.finish_reason is not None
            if finished:
                text += self.detokenizer.flush()
            text, matched = self._stop_strings(text, finished)
            text_parts.append(self._run_stages(text, finished or matched))
            if matched:
                self.finish_reason, self.stopped_by_string = "stop", True
                break
            if finished:
                self.finish_reason = "stop" if output.finish_reason == "abort" else output.finish_reason
                if output.finish_reason == "error":
                    error = worker_failure(output.error or "the worker failed the request", invalid=output.invalid)
                break
        text = "".join(text_parts)
        if self.parser is not None:
            return self._parse(text, logprobs, error)
        return Delta(text, self.finish_reason, logprobs, error)

    def feed_each(self, outputs: list[RequestOutput]) -> list[Delta]:
        """One delta per output (a streamed response's one event per engine output), up to the first finish."""
        deltas = []
        for output in outputs:
            delta = self.feed([output])
            deltas.append(delta)
            if delta.finish_reason is not None:
                break
        return deltas

    def _parse(self, text: str, logprobs: list[TokenLogprob] | None, error: RequestError | None) -> Delta:
        assert self.parser is not None
        segments = self.parser.feed(text) if text else []
        if self.finish_reason is not None:
            segments += self.parser.finish()
        content = "".join(segment.text for segment in segments if segment.kind == CONTENT)
        return Delta(content, self.finish_reason, logprobs, error, segments)

    def _stop_strings(self, text: str, finished: bool) -> tuple[str, bool]:
        if self.stop is None:
            return text, False
        released, matched = self.stop.feed(text) if text else ("", False)
        if finished and not matched:
            released += self.stop.flush()
        return released, matched

    def _run_stages(self, text: str, finished: bool) -> str:
        for stage in self.stages:
            text = stage.feed(text)
            if finished:
                text += stage.finish()
        return text
