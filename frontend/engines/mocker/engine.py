"""A mock inference engine: readable text from a corpus, a real paged KV cache, vLLM-like scheduling.

A step's outputs are delivered when its simulated duration has passed since it started (the mock's own work
counts towards it, as an engine's does), so time to first token includes the prefill that produced it. Each step spends a token budget (``max_num_batched_tokens``): one token for every request in decode, the
rest on prompt chunks of requests in prefill (chunked prefill), admitting waiting requests while the KV cache
has room and fewer than ``max_num_seqs`` run. A prompt's cached prefix (prefix caching) is not recomputed.
Everything a step produced is reported together, so the SDK sends one message per step per gateway, and the
KV events of the step go out as one batch.

Generation: a request starts at a paragraph of the corpus (chosen from the seed, or from the prompt when
sampling is greedy) and walks its tokens; the end of a paragraph is the end of sequence unless ``ignore_eos``
or ``min_tokens`` say otherwise, in which case it moves on to the next paragraph. With a script
(``script.py``) a prompt that matches a rule gets the rule's output instead, ending with it. Otherwise a
request with structured output (``sampling.guided``: a choice or a JSON Schema, ``guided.py``) gets a
document that satisfies it, generated the same way.

Timing model (milliseconds, Dynamo's mocker polynomials), divided by ``speedup_ratio``:
    prefill(t) = 4.209989e-7 t^2 + 1.518344e-2 t + 16.50142        t = prompt tokens computed in the step
    decode(u)  = max(1, -25.74 u^2 + 54.01 u + 5.74)                u = used KV blocks / all KV blocks
    transfer(t) = t x kv_bytes_per_token / kv_transfer_bandwidth    t = prompt tokens received from a prefill worker

Disaggregated serving: a prefill leg (``GenerateRequest.remote_decode``) is prefilled as usual and ends after its
one token with ``kv_transfer_params`` naming this engine, its blocks, a digest of the prompt and the prompt
tokens it found cached. A decode leg (``kv_transfer_params`` set) checks the digest against its own prompt (a
mismatch fails the request), takes the prompt tokens it does not hold from the "transfer" (no compute, the
transfer time above) and decodes; its first output reports the prefill side's cached tokens, as vLLM does.
``prompt_tokens`` counts every prompt token by source (computed, local cache hit, transferred).
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from array import array
from collections import deque
from dataclasses import dataclass

import xxhash

from ...protocol.engine import GenerateRequest, TokenLogprob
from ...worker import Engine, TokenSink
from ...worker.kv_publisher import KvEventPublisher
from ...worker.load_publisher import LoadPublisher
from ...worker.status_server import PromptTokenSources
from .corpus import Corpus
from .guided import guided_text
from .kv_cache import CacheFull, KvCache, SequenceBlocks
from .script import Script, ScriptedOutput

log = logging.getLogger(__name__)

MIN_SLEEP_S = 0.0005  # below this a step does not sleep, it only yields to the event loop


def prefill_ms(new_tokens: int) -> float:
    if new_tokens <= 0:
        return 0.0
    return 4.209989e-7 * new_tokens * new_tokens + 1.518344e-2 * new_tokens + 16.50142


def decode_ms(kv_usage: float) -> float:
    return max(1.0, -25.74 * kv_usage * kv_usage + 54.01 * kv_usage + 5.74)


def prompt_digest(request: GenerateRequest) -> str:
    """A prefill leg's fingerprint of its prompt, which the decode leg's prompt must match."""
    return xxhash.xxh3_64_hexdigest(array("I", request.token_ids).tobytes())


def transfer_problem(request: GenerateRequest) -> str | None:
    """Why a decode leg's ``kv_transfer_params`` cannot be used (None: they can)."""
    params = request.kv_transfer_params or {}
    if not isinstance(params.get("remote_engine_id"), str):
        return "kv_transfer_params name no prefill engine (remote_engine_id)"
    if params.get("prompt_digest") != prompt_digest(request):
        return "kv_transfer_params are for another prompt (the prompt digest differs)"
    return None


@dataclass(frozen=True)
class EngineSettings:
    """Capacity and speed of the simulated engine."""

    speedup_ratio: float = 1.0
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    num_gpu_blocks: int = 65536  # 1 Mi tokens at block size 16: the KV capacity of Dynamo's mocker (16384 x 64)
    block_size: int = 16
    kv_bytes_per_token: int = 131072  # a 7-8B model in 16 bits: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes
    kv_transfer_gbps: float = 64.0  # GB/s between a prefill and a decode worker (Dynamo's mocker default)

    def transfer_ms(self, tokens: int) -> float:
        """How long the KV of ``tokens`` prompt tokens takes to arrive from a prefill worker."""
        return tokens * self.kv_bytes_per_token / (self.kv_transfer_gbps * 1e6)


class Sequence:
    """One request inside the engine."""

    __slots__ = ("request", "sink", "rng", "position", "generated", "stop_ids", "blocks", "computed",
                 "cached_tokens", "script", "paused", "transferred", "prompt_len")

    def __init__(self, request: GenerateRequest, sink: TokenSink, rng: random.Random, position: int,
                 script: ScriptedOutput | None = None) -> None:
        self.request = request
        self.sink = sink
        self.rng = rng
        self.position = position  # in the corpus, or in the scripted output
        self.script = script
        self.generated = 0
        stop_ids = set(request.stop.stop_token_ids)
        if not request.stop.ignore_eos:
            stop_ids.update(request.eos_token_ids)
        self.stop_ids = frozenset(stop_ids)
        self.blocks = SequenceBlocks(request.token_ids)
        self.prompt_len = len(request.token_ids)
        self.computed = 0  # prompt tokens whose KV exists
        self.cached_tokens = 0
        self.paused = False  # its client reads too slowly: not decoded until resumed
        self.transferred = request.kv_transfer_params is not None  # a decode leg: its prompt KV is "transferred"

    @property
    def in_prefill(self) -> bool:
        return self.computed < self.prompt_len


class MockEngine(Engine):
    """Step-based mock engine; ``run()`` is the scheduler loop (start it as a task)."""

    def __init__(self, corpus: Corpus, settings: EngineSettings, publisher: KvEventPublisher | None = None,
                 script: Script | None = None, load: LoadPublisher | None = None) -> None:
        self.corpus = corpus
        self.load = load
        self.script = script
        self.settings = settings
        self.cache = KvCache(settings.num_gpu_blocks, settings.block_size, publisher)
        self.publisher = publisher
        self.waiting: deque[Sequence] = deque()
        self.running: dict[str, Sequence] = {}
        self._wakeup = asyncio.Event()
        # the step's outputs: (sink, token ids, logprobs, cached tokens, the finish's arguments or None)
        self._outbox: list[tuple[TokenSink, list[int], list[TokenLogprob] | None, int, dict | None]] = []
        self.steps = 0
        self.engine_id = f"mock-{random.getrandbits(48):012x}"  # named in a prefill leg's kv_transfer_params
        self.prompt_tokens = PromptTokenSources()
        self._transfer_ms = 0.0  # KV received in this step
        self._unseeded_rng = random.Random()  # shared by the requests that ask for neither a seed nor greedy

    # ---- Engine interface -----------------------------------------------------------------------------

    def add_request(self, request: GenerateRequest, sink: TokenSink) -> None:
        if request.kv_transfer_params is not None:
            problem = transfer_problem(request)
            if problem is not None:
                sink.send([], "error", error=problem)
                return
        rng = self._rng_for(request)
        scripted = self.script.output_for(request.token_ids) if self.script is not None else None
        if scripted is None and request.sampling.guided is not None:
            scripted = self._guided_output(request, rng)
        position = 0
        if scripted is None:
            position = self.corpus.paragraph_start(rng.randrange(self.corpus.paragraph_count))
        self.waiting.append(Sequence(request, sink, rng, position, scripted))
        self._wakeup.set()

    def abort_request(self, request_id: str) -> None:
        sequence = self.running.pop(request_id, None)
        if sequence is not None:
            self.cache.release(sequence.blocks)
            self._outbox = [entry for entry in self._outbox if entry[0] is not sequence.sink]
        else:
            self.waiting = deque(s for s in self.waiting if s.request.request_id != request_id)
        self._report_load()

    def pause_request(self, request_id: str, paused: bool) -> None:
        sequence = self.running.get(request_id)
        if sequence is None:
            sequence = next((s for s in self.waiting if s.request.request_id == request_id), None)
        if sequence is not None:
            sequence.paused = paused
            self._wakeup.set()

    def _report_load(self) -> None:
        if self.load is not None:
            self.load.report(len(self.running), len(self.waiting), self.cache.used_blocks)

    # ---- scheduler ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run steps forever, each lasting its simulated duration from its start, the mock's own work included
        (as an engine's step time is its whole step): while the mock keeps up, a step starts when the one before
        ended, and its outputs go when it ends. Idle while there is nothing to do."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if not self.waiting and all(s.paused for s in self.running.values()):
                self._wakeup.clear()
                await self._wakeup.wait()
                started = loop.time()
            ends = started + self.step() / 1000.0 / self.settings.speedup_ratio
            wait = ends - loop.time()
            await asyncio.sleep(wait if wait >= MIN_SLEEP_S else 0)
            self.deliver()
            started = ends if wait > 0 else loop.time()  # behind (a step shorter than the mock's work): from now

    def deliver(self) -> None:
        """Hand the last step's outputs to their requests (and its KV events to the publisher)."""
        outbox, self._outbox = self._outbox, []
        for sink, token_ids, logprobs, cached_tokens, ending in outbox:
            if ending is None:
                sink.send(token_ids, None, logprobs, cached_tokens=cached_tokens)
            else:
                sink.send(token_ids, logprobs=logprobs, cached_tokens=cached_tokens, **ending)
        if self.publisher is not None:
            self.publisher.flush()
        self._report_load()

    def step(self) -> float:
        """Advance every running request once; returns the simulated duration in milliseconds."""
        self.steps += 1
        decoding, prefilling = [], []
        for sequence in self.running.values():
            if sequence.in_prefill:
                prefilling.append(sequence)
            elif not sequence.paused:
                decoding.append(sequence)
        budget = self.settings.max_num_batched_tokens - len(decoding)
        prefilled = 0
        for sequence in prefilling:
            prefilled += self._prefill_chunk(sequence, budget - prefilled)
        budget -= prefilled
        while self.waiting and budget > 0 and len(self.running) < self.settings.max_num_seqs:
            sequence = self.waiting[0]
            if sequence.sink.finished:
                self.waiting.popleft()
                continue
            try:
                self._admit(sequence)
            except CacheFull:
                break
            self.waiting.popleft()
            chunk = self._prefill_chunk(sequence, budget)
            prefilled += chunk
            budget -= chunk
        usage = self.cache.used_blocks / self.cache.num_blocks
        for sequence in decoding:
            self._decode(sequence)
        transfer_ms, self._transfer_ms = self._transfer_ms, 0.0
        return prefill_ms(prefilled) + (decode_ms(usage) if decoding else 0.0) + transfer_ms

    def _admit(self, sequence: Sequence) -> None:
        cached = self.cache.admit(sequence.blocks)
        sequence.cached_tokens = cached
        sequence.computed = min(cached, sequence.prompt_len - 1)
        self.prompt_tokens.local_cache_hit += sequence.computed
        self.running[sequence.request.request_id] = sequence

    def _prefill_chunk(self, sequence: Sequence, budget: int) -> int:
        """Compute up to ``budget`` prompt tokens; the first token comes out when the prompt is done. A decode
        leg receives the rest of its prompt instead (``_receive``)."""
        if sequence.transferred:
            self._receive(sequence)
            return 0
        if budget <= 0:
            return 0
        chunk = min(budget, sequence.prompt_len - sequence.computed)
        sequence.computed += chunk
        self.prompt_tokens.local_compute += chunk
        self.cache.commit(sequence.blocks, sequence.computed)
        if not sequence.in_prefill:
            self._decode(sequence)
        return chunk

    def _receive(self, sequence: Sequence) -> None:
        """A decode leg's prompt KV arrives from the prefill worker (all of it that this cache lacks); its
        first token follows at once. The transfer time is the step's (``_transfer_ms``)."""
        tokens = sequence.prompt_len - sequence.computed
        sequence.computed = sequence.prompt_len
        sequence.transferred = False
        self.prompt_tokens.external_kv_transfer += tokens
        self.prompt_tokens.kv_transfers += 1
        self._transfer_ms += self.settings.transfer_ms(tokens)
        cached = sequence.request.kv_transfer_params.get("remote_prefill_cached_tokens")  # type: ignore[union-attr]
        sequence.cached_tokens = cached if isinstance(cached, int) else 0  # the prefill side's, as vLLM reports
        self.cache.commit(sequence.blocks, sequence.computed)
        self._decode(sequence)

    def _transfer_params(self, sequence: Sequence) -> dict:
        """What a prefill leg answers: where a decode worker finds the prompt's KV."""
        request = sequence.request
        full_blocks = len(request.token_ids) // self.settings.block_size
        return {"remote_engine_id": self.engine_id, "remote_request_id": request.request_id,
                "remote_block_ids": sequence.blocks.block_ids[:full_blocks], "prompt_digest": prompt_digest(request),
                "remote_prefill_cached_tokens": sequence.cached_tokens}

    def _decode(self, sequence: Sequence) -> None:
        request = sequence.request
        stop = request.stop
        if sequence.script is not None:
            token, at_paragraph_end = self._scripted_token(sequence)
            if token is None:
                self._finish(sequence, [], "stop")
                return
            if sequence.generated == sequence.script.fail_after:
                self._finish(sequence, [], "error", error="the engine failed (scripted)", retryable=True)
                return
        else:
            token, at_paragraph_end = self.corpus.token_at(sequence.position)
        sequence.position += 1
        may_stop = sequence.generated >= stop.min_tokens
        if may_stop and ((at_paragraph_end and not stop.ignore_eos and request.eos_token_ids)
                         or token in sequence.stop_ids):
            self._finish(sequence, [], "stop")
            return
        blocks = sequence.blocks
        try:
            self.cache.append(blocks, token)
        except CacheFull:
            self._finish(sequence, [], "error", error="the KV cache is full")
            return
        self.cache.commit(blocks, len(blocks.tokens) - 1)
        sequence.generated += 1
        logprobs = self._logprobs(sequence, token) if request.logprobs is not None else None
        cached = sequence.cached_tokens if sequence.generated == 1 else 0
        if sequence.generated >= stop.max_tokens:
            params = self._transfer_params(sequence) if request.remote_decode else None
            self._finish(sequence, [token], "length", logprobs, cached_tokens=cached, kv_transfer_params=params)
        else:
            self._outbox.append((sequence.sink, [token], logprobs, cached, None))

    def _guided_output(self, request: GenerateRequest, rng: random.Random) -> ScriptedOutput | None:
        """Structured output as a scripted answer (None: not honoured by the mock, e.g. a regex)."""
        try:
            text = guided_text(request.sampling.guided, rng)  # type: ignore[arg-type]
        except (RecursionError, TypeError, ValueError, OverflowError):  # a schema beyond the mock: plain text
            log.warning("cannot fake output for this guided request", extra={"request_id": request.request_id})
            return None
        if text is None:
            return None
        ids = self.corpus.tokenizer.encode(text, add_special_tokens=False).ids
        return ScriptedOutput(ids, 0, -1)

    @staticmethod
    def _scripted_token(sequence: Sequence) -> tuple[int | None, bool]:
        """The next token of a scripted answer (None when it is used up), skipping spent reasoning."""
        script = sequence.script
        assert script is not None
        sequence.position = script.next_position(sequence.position, sequence.request.stop.max_thinking_tokens)
        if sequence.position >= len(script.token_ids):
            return None, True
        return script.token_ids[sequence.position], False

    def _finish(self, sequence: Sequence, tokens: list[int], reason: str,
                logprobs: list[TokenLogprob] | None = None, *, error: str | None = None,
                cached_tokens: int = 0, retryable: bool = False, kv_transfer_params: dict | None = None) -> None:
        del self.running[sequence.request.request_id]
        self.cache.release(sequence.blocks)
        self._outbox.append((sequence.sink, tokens, logprobs, cached_tokens,
                             {"finish_reason": reason, "error": error, "retryable": retryable,
                              "kv_transfer_params": kv_transfer_params}))

    def _logprobs(self, sequence: Sequence, token: int) -> list[TokenLogprob]:
        """A made-up but seed-deterministic distribution: the chosen token is always the most likely."""
        rng = sequence.rng
        chosen = -rng.random() * 0.7
        wanted = sequence.request.logprobs or 0
        top = [(token, chosen)] if wanted else []
        seen = {token}
        logprob = chosen
        while len(top) < wanted:
            alternative = rng.randrange(self.corpus.vocab_size)
            if alternative in seen:
                continue
            seen.add(alternative)
            logprob -= 0.5 + rng.random()
            top.append((alternative, logprob))
        return [TokenLogprob(token, chosen, top)]

    def _rng_for(self, request: GenerateRequest) -> random.Random:
        """A seeded request's own generator (its output repeats), a greedy one's from its prompt; the others share
        one (seeding a generator per request costs more than the rest of a one-token request)."""
        sampling = request.sampling
        if sampling.seed is not None:
            return random.Random(sampling.seed)
        if sampling.temperature == 0:
            return random.Random(zlib.crc32(repr(request.token_ids).encode()))
        return self._unseeded_rng
