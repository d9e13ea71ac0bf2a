"""A mock inference engine: readable text from a corpus, real batching, a simulated clock.

Scheduling follows a vLLM-like loop: each step admits waiting requests (prefill, whose time grows with the
new prompt tokens) and advances every running request by one token (decode, whose time grows with KV use).
All requests advanced in a step are reported together, so the SDK sends one message per step per gateway.

Generation: a request starts at a paragraph of the corpus (chosen from the seed, or from the prompt when
sampling is greedy) and walks its tokens; the end of a paragraph is the end of sequence unless ``ignore_eos``
or ``min_tokens`` say otherwise, in which case it moves on to the next paragraph.

Timing model (milliseconds, Dynamo's mocker polynomials), divided by ``speedup_ratio``:
    prefill(t) = 4.209989e-7 t^2 + 1.518344e-2 t + 16.50142        t = new prompt tokens in the step
    decode(u)  = max(1, -25.74 u^2 + 54.01 u + 5.74)                u = active KV tokens / KV capacity
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections import deque
from dataclasses import dataclass, field

from ..protocol.engine import GenerateRequest, TokenLogprob
from ..worker import Engine, TokenSink
from .corpus import Corpus

log = logging.getLogger(__name__)

MIN_SLEEP_S = 0.0005  # below this a step does not sleep, it only yields to the event loop


def prefill_ms(new_tokens: int) -> float:
    if new_tokens <= 0:
        return 0.0
    return 4.209989e-7 * new_tokens * new_tokens + 1.518344e-2 * new_tokens + 16.50142


def decode_ms(kv_usage: float) -> float:
    return max(1.0, -25.74 * kv_usage * kv_usage + 54.01 * kv_usage + 5.74)


@dataclass
class Sequence:
    """One request inside the engine."""

    request: GenerateRequest
    sink: TokenSink
    rng: random.Random
    position: int
    generated: int = 0
    stop_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def kv_tokens(self) -> int:
        return len(self.request.token_ids) + self.generated


@dataclass(frozen=True)
class EngineSettings:
    """Capacity and speed of the simulated engine."""

    speedup_ratio: float = 1.0
    max_num_seqs: int = 256
    kv_capacity_tokens: int = 16384 * 16


class MockEngine(Engine):
    """Step-based mock engine; ``run()`` is the scheduler loop (start it as a task)."""

    def __init__(self, corpus: Corpus, settings: EngineSettings) -> None:
        self.corpus = corpus
        self.settings = settings
        self.waiting: deque[Sequence] = deque()
        self.running: dict[str, Sequence] = {}
        self._wakeup = asyncio.Event()
        self.steps = 0

    # ---- Engine interface -----------------------------------------------------------------------------

    def add_request(self, request: GenerateRequest, sink: TokenSink) -> None:
        rng = self._rng_for(request)
        stop_ids = frozenset(request.stop.stop_token_ids)
        if not request.stop.ignore_eos:
            stop_ids |= frozenset(request.eos_token_ids)
        position = self.corpus.paragraph_start(rng.randrange(self.corpus.paragraph_count))
        self.waiting.append(Sequence(request, sink, rng, position, stop_ids=stop_ids))
        self._wakeup.set()

    def abort_request(self, request_id: str) -> None:
        if self.running.pop(request_id, None) is None:
            self.waiting = deque(s for s in self.waiting if s.request.request_id != request_id)

    # ---- scheduler ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run steps forever; idle while there is nothing to do."""
        while True:
            if not self.waiting and not self.running:
                self._wakeup.clear()
                await self._wakeup.wait()
            step_ms = self._admit() + self._decode_time()
            self.steps += 1
            for sequence in list(self.running.values()):
                self._advance(sequence)
            delay = step_ms / 1000.0 / self.settings.speedup_ratio
            await asyncio.sleep(delay if delay >= MIN_SLEEP_S else 0)

    def _admit(self) -> float:
        new_tokens = 0
        while self.waiting and len(self.running) < self.settings.max_num_seqs:
            sequence = self.waiting.popleft()
            if sequence.sink.finished:
                continue
            self.running[sequence.request.request_id] = sequence
            new_tokens += len(sequence.request.token_ids)
        return prefill_ms(new_tokens)

    def _decode_time(self) -> float:
        active = sum(s.kv_tokens for s in self.running.values())
        return decode_ms(min(1.0, active / self.settings.kv_capacity_tokens))

    def _advance(self, sequence: Sequence) -> None:
        request = sequence.request
        stop = request.stop
        token, at_paragraph_end = self.corpus.token_at(sequence.position)
        sequence.position += 1
        may_stop = sequence.generated >= stop.min_tokens
        if at_paragraph_end and may_stop and not stop.ignore_eos and request.eos_token_ids:
            self._finish(sequence, [], "stop")
            return
        if token in sequence.stop_ids and may_stop:
            self._finish(sequence, [], "stop")
            return
        sequence.generated += 1
        logprobs = self._logprobs(sequence, token) if request.logprobs is not None else None
        if sequence.generated >= stop.max_tokens:
            self._finish(sequence, [token], "length", logprobs)
        else:
            sequence.sink.send([token], None, logprobs)

    def _finish(self, sequence: Sequence, tokens: list[int], reason: str,
                logprobs: list[TokenLogprob] | None = None) -> None:
        del self.running[sequence.request.request_id]
        sequence.sink.send(tokens, reason, logprobs)

    def _logprobs(self, sequence: Sequence, token: int) -> list[TokenLogprob]:
        """A made-up but seed-deterministic distribution: the chosen token is always the most likely."""
        rng = sequence.rng
        chosen = -rng.random() * 0.7
        wanted = sequence.request.logprobs or 0
        top = [(token, chosen)] if wanted else []
        logprob = chosen
        while len(top) < wanted:
            logprob -= 0.5 + rng.random()
            top.append((rng.randrange(self.corpus.vocab_size), logprob))
        return [TokenLogprob(token, chosen, top)]

    @staticmethod
    def _rng_for(request: GenerateRequest) -> random.Random:
        sampling = request.sampling
        if sampling.seed is not None:
            return random.Random(sampling.seed)
        if sampling.temperature == 0:
            return random.Random(zlib.crc32(repr(request.token_ids).encode()))
        return random.Random()
