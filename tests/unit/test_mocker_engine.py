"""Unit tests for frontend.engines.mocker.engine (the step-based mock engine) and frontend.engines.mocker.corpus."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import msgspec
import pytest
from tokenizers import Tokenizer

from frontend.engines.mocker import engine as engine_module
from frontend.engines.mocker.corpus import Corpus
from frontend.engines.mocker.engine import EngineSettings, MockEngine, decode_ms, prefill_ms, prompt_digest
from frontend.protocol.engine import GenerateRequest, SamplingOptions, StopConditions, TokenLogprob

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = REPO_ROOT / "config" / "models" / "tiny" / "tokenizer.json"
FAST = EngineSettings(speedup_ratio=1e12)
EOS = [2, 0]
TIMEOUT_S = 5.0

ONE_PARAGRAPH = "Hello world. STOP here, then more text follows after."
SHORT_PARAGRAPHS = "One two three.\n\nFour five six.\n\nSeven eight nine."


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TINY_TOKENIZER))


@pytest.fixture(scope="module")
def corpus(tokenizer) -> Corpus:
    return Corpus(tokenizer)


class FakeSink:
    """Collects what the engine sends, like worker.runtime.TokenSink (which ignores sends once finished)."""

    def __init__(self, engine: MockEngine | None = None) -> None:
        self.engine = engine
        self.calls: list[tuple[list[int], str | None, list[TokenLogprob] | None]] = []
        self.steps: list[int] = []  # engine.steps at every send
        self.finished = False
        self.done = asyncio.Event()
        self.errors: list[str | None] = []
        self.cached: list[int] = []
        self.kv_transfer_params: dict | None = None

    def send(self, token_ids, finish_reason=None, logprobs=None, error=None, cached_tokens=0, retryable=False,
             kv_transfer_params=None) -> None:
        assert not self.finished, "send after the finish reason"
        self.calls.append((list(token_ids), finish_reason, logprobs))
        self.errors.append(error)
        self.cached.append(cached_tokens)
        if kv_transfer_params is not None:
            self.kv_transfer_params = kv_transfer_params
        if self.engine is not None:
            self.steps.append(self.engine.steps)
        if finish_reason is not None:
            self.finished = True
            self.done.set()

    @property
    def tokens(self) -> list[int]:
        return [t for ids, _, _ in self.calls for t in ids]

    @property
    def finish_reason(self) -> str | None:
        return self.calls[-1][1] if self.calls else None


def request(request_id: str = "r1", prompt: list[int] | None = None, *, max_tokens: int = 16, min_tokens: int = 0,
            stop_token_ids: list[int] | None = None, ignore_eos: bool = False, eos: list[int] | None = None,
            seed: int | None = None, temperature: float | None = None,
            logprobs: int | None = None) -> GenerateRequest:
    return GenerateRequest(
        request_id, prompt if prompt is not None else [10, 11, 12],
        StopConditions(max_tokens=max_tokens, min_tokens=min_tokens, stop_token_ids=stop_token_ids or [],
                       ignore_eos=ignore_eos),
        SamplingOptions(temperature=temperature, seed=seed),
        EOS if eos is None else eos, logprobs,
    )


async def _generate(engine: MockEngine, requests: list[GenerateRequest]) -> list[FakeSink]:
    sinks = [FakeSink(engine) for _ in requests]
    for req, sink in zip(requests, sinks):
        engine.add_request(req, sink)
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in sinks)), TIMEOUT_S)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert engine.running == {} and not engine.waiting
    return sinks


def generate(corpus: Corpus, requests: list[GenerateRequest], settings: EngineSettings = FAST) -> tuple[
        MockEngine, list[FakeSink]]:
    engine = MockEngine(corpus, settings)
    return engine, asyncio.run(_generate(engine, requests))


def generate_one(corpus: Corpus, req: GenerateRequest) -> FakeSink:
    return generate(corpus, [req])[1][0]


# ---- stop conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 17, 300])
def test_max_tokens_with_ignore_eos(corpus, n):
    sink = generate_one(corpus, request(max_tokens=n, ignore_eos=True, seed=1))
    assert len(sink.tokens) == n
    assert sink.finish_reason == "length"
    assert [reason for _, reason, _ in sink.calls] == [None] * (len(sink.calls) - 1) + ["length"]
    assert all(len(ids) == 1 for ids, _, _ in sink.calls)  # one token per step, the last one with the reason


def test_ignore_eos_crosses_paragraphs(tokenizer):
    corpus = Corpus(tokenizer, SHORT_PARAGRAPHS)
    total = len(corpus.tokens)
    sink = generate_one(corpus, request(max_tokens=2 * total + 3, ignore_eos=True, seed=3))
    assert len(sink.tokens) == 2 * total + 3
    assert sink.finish_reason == "length"
    eos_like = set(EOS)
    assert not eos_like & set(sink.tokens)


def test_paragraph_end_is_eos(tokenizer):
    corpus = Corpus(tokenizer, ONE_PARAGRAPH)
    paragraph = list(corpus.tokens)
    sink = generate_one(corpus, request(max_tokens=1000, seed=0))
    assert sink.finish_reason == "stop"
    # The paragraph's last token ("\n\n") plays the role of EOS: it ends the sequence and is not emitted.
    assert sink.tokens == paragraph[:-1]
    assert sink.calls[-1][0] == []


def test_no_eos_ids_means_no_paragraph_stop(tokenizer):
    corpus = Corpus(tokenizer, ONE_PARAGRAPH)
    n = len(corpus.tokens) + 5
    sink = generate_one(corpus, request(max_tokens=n, seed=0, eos=[]))
    assert len(sink.tokens) == n
    assert sink.finish_reason == "length"


@pytest.mark.parametrize("min_tokens", [1, 5, 14, 20, 40])
def test_min_tokens_respected(tokenizer, min_tokens):
    corpus = Corpus(tokenizer, SHORT_PARAGRAPHS)
    shortest = min(b - a for a, b in zip(corpus.starts, corpus.starts[1:] + [len(corpus.tokens)]))
    sink = generate_one(corpus, request(max_tokens=1000, min_tokens=min_tokens, seed=5))
    assert sink.finish_reason == "stop"
    assert len(sink.tokens) >= min_tokens
    # It stops at the first paragraph end after min_tokens, so never a whole paragraph later.
    assert len(sink.tokens) < min_tokens + shortest + max(b - a for a, b in zip(corpus.starts, corpus.starts[1:]))


def test_without_min_tokens_stops_early(tokenizer):
    corpus = Corpus(tokenizer, SHORT_PARAGRAPHS)
    longest = max(b - a for a, b in zip(corpus.starts, corpus.starts[1:] + [len(corpus.tokens)]))
    sink = generate_one(corpus, request(max_tokens=1000, seed=5))
    assert sink.finish_reason == "stop"
    assert len(sink.tokens) < longest


def test_stop_token_id_ends_with_stop(tokenizer):
    corpus = Corpus(tokenizer, ONE_PARAGRAPH)
    stop_id = tokenizer.token_to_id("ĠSTOP")
    paragraph = list(corpus.tokens)
    sink = generate_one(corpus, request(max_tokens=100, stop_token_ids=[stop_id], eos=[], seed=0))
    assert sink.finish_reason == "stop"
    assert sink.tokens == paragraph[:paragraph.index(stop_id)]
    assert stop_id not in sink.tokens


def test_stop_token_id_applies_even_with_ignore_eos(tokenizer):
    corpus = Corpus(tokenizer, ONE_PARAGRAPH)
    stop_id = tokenizer.token_to_id("ĠSTOP")
    sink = generate_one(corpus, request(max_tokens=100, stop_token_ids=[stop_id], ignore_eos=True, seed=0))
    assert sink.finish_reason == "stop"
    assert stop_id not in sink.tokens


def test_stop_token_id_waits_for_min_tokens(tokenizer):
    corpus = Corpus(tokenizer, ONE_PARAGRAPH)
    stop_id = tokenizer.token_to_id("ĠSTOP")
    paragraph = list(corpus.tokens)
    first_stop = paragraph.index(stop_id)
    sink = generate_one(corpus, request(max_tokens=100, min_tokens=first_stop + 1, stop_token_ids=[stop_id],
                                        eos=[], seed=0))
    assert sink.finish_reason == "stop"
    # The first STOP is emitted (min_tokens not reached yet); the next occurrence (one lap later) stops.
    assert sink.tokens[first_stop] == stop_id
    assert len(sink.tokens) == len(paragraph) + first_stop


def test_eos_id_in_text_stops(tokenizer):
    # An EOS id that occurs in the corpus text stops generation like a stop token id.
    corpus = Corpus(tokenizer, ONE_PARAGRAPH)
    dot = tokenizer.token_to_id(".")
    sink = generate_one(corpus, request(max_tokens=100, eos=[dot], seed=0))
    assert sink.finish_reason == "stop"
    assert dot not in sink.tokens


# ---- determinism -----------------------------------------------------------------------------------


def test_same_seed_same_tokens(corpus):
    reqs = [request(f"r{i}", max_tokens=40, ignore_eos=True, seed=1234) for i in range(2)]
    _, (a, b) = generate(corpus, reqs)
    assert a.tokens == b.tokens
    _, (c,) = generate(corpus, [request("r3", max_tokens=40, ignore_eos=True, seed=1234)])
    assert c.tokens == a.tokens


def test_different_seeds_usually_differ(corpus):
    reqs = [request(f"r{seed}", max_tokens=30, ignore_eos=True, seed=seed) for seed in range(8)]
    _, sinks = generate(corpus, reqs)
    assert len({tuple(s.tokens) for s in sinks}) > 1


def test_greedy_same_prompt_same_tokens(corpus):
    prompt = [100, 200, 300, 400]
    reqs = [request(f"g{i}", prompt, max_tokens=40, ignore_eos=True, temperature=0.0) for i in range(3)]
    _, sinks = generate(corpus, reqs)
    assert sinks[0].tokens == sinks[1].tokens == sinks[2].tokens
    _, (again,) = generate(corpus, [request("g9", list(prompt), max_tokens=40, ignore_eos=True, temperature=0.0)])
    assert again.tokens == sinks[0].tokens


def test_greedy_depends_on_prompt(corpus):
    reqs = [request(f"g{i}", [i, i + 1, i + 2], max_tokens=30, ignore_eos=True, temperature=0.0)
            for i in range(8)]
    _, sinks = generate(corpus, reqs)
    assert len({tuple(s.tokens) for s in sinks}) > 1


def test_generated_tokens_follow_the_corpus(corpus):
    sink = generate_one(corpus, request(max_tokens=50, ignore_eos=True, seed=77))
    start = sink.tokens[0]
    starts = [p for p in corpus.starts if corpus.tokens[p] == start]
    assert any(list(corpus.tokens[p:p + 50]) == sink.tokens for p in starts)


# ---- logprobs --------------------------------------------------------------------------------------


def test_logprobs_top_n_with_chosen_first(corpus):
    sink = generate_one(corpus, request(max_tokens=20, ignore_eos=True, seed=9, logprobs=3))
    assert len(sink.calls) == 20
    for ids, _, logprobs in sink.calls:
        assert logprobs is not None and len(logprobs) == 1
        entry = logprobs[0]
        assert entry.token_id == ids[0]
        assert entry.logprob <= 0
        assert len(entry.top) == 3
        assert entry.top[0] == (ids[0], entry.logprob)
        values = [lp for _, lp in entry.top]
        assert values == sorted(values, reverse=True)
        assert all(0 <= tid < corpus.vocab_size for tid, _ in entry.top)


def test_logprobs_zero_gives_chosen_only(corpus):
    sink = generate_one(corpus, request(max_tokens=5, ignore_eos=True, seed=9, logprobs=0))
    for ids, _, logprobs in sink.calls:
        assert logprobs[0].token_id == ids[0]
        assert logprobs[0].top == []


def test_no_logprobs_when_not_asked(corpus):
    sink = generate_one(corpus, request(max_tokens=5, ignore_eos=True, seed=9))
    assert all(logprobs is None for _, _, logprobs in sink.calls)


def test_logprobs_deterministic_with_seed(corpus):
    reqs = [request(f"r{i}", max_tokens=10, ignore_eos=True, seed=4, logprobs=2) for i in range(2)]
    _, (a, b) = generate(corpus, reqs)
    assert [c[2] for c in a.calls] == [c[2] for c in b.calls]


# ---- abort -----------------------------------------------------------------------------------------


def test_abort_running_request(corpus):
    async def scenario():
        engine = MockEngine(corpus, FAST)
        sink, other = FakeSink(engine), FakeSink(engine)
        engine.add_request(request("victim", max_tokens=10**6, ignore_eos=True, seed=1), sink)
        engine.add_request(request("other", max_tokens=50, ignore_eos=True, seed=2), other)
        task = asyncio.create_task(engine.run())
        try:
            while len(sink.calls) < 5:
                await asyncio.sleep(0)
            assert "victim" in engine.running
            engine.abort_request("victim")
            sink.finished = True  # what the runtime does on abort
            count = len(sink.calls)
            await asyncio.wait_for(other.done.wait(), TIMEOUT_S)
            assert len(sink.calls) == count  # nothing after the abort
            assert engine.running == {}
            # Idle: no more steps without work.
            steps = engine.steps
            for _ in range(20):
                await asyncio.sleep(0)
            assert engine.steps == steps
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return sink, other

    sink, other = asyncio.run(scenario())
    assert 5 <= len(sink.calls) < 60
    assert all(reason is None for _, reason, _ in sink.calls)
    assert other.finish_reason == "length" and len(other.tokens) == 50


def test_abort_waiting_request(corpus):
    engine = MockEngine(corpus, FAST)
    sink = FakeSink(engine)
    engine.add_request(request("w", max_tokens=5, ignore_eos=True), sink)
    engine.abort_request("w")
    assert not engine.waiting and not engine.running
    engine.abort_request("unknown")  # no error


def test_finished_sink_is_not_admitted(corpus):
    async def scenario():
        engine = MockEngine(corpus, FAST)
        cancelled, live = FakeSink(engine), FakeSink(engine)
        cancelled.finished = True  # the client left before the engine admitted it
        engine.add_request(request("gone", max_tokens=5, ignore_eos=True), cancelled)
        engine.add_request(request("live", max_tokens=5, ignore_eos=True), live)
        task = asyncio.create_task(engine.run())
        try:
            await asyncio.wait_for(live.done.wait(), TIMEOUT_S)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return cancelled, live

    cancelled, live = asyncio.run(scenario())
    assert cancelled.calls == []
    assert len(live.tokens) == 5


# ---- batching --------------------------------------------------------------------------------------


def test_concurrent_requests_share_steps(corpus):
    n_requests, n_tokens = 64, 25
    reqs = [request(f"r{i}", max_tokens=n_tokens, ignore_eos=True, seed=i) for i in range(n_requests)]
    engine, sinks = generate(corpus, reqs)
    assert all(len(s.tokens) == n_tokens and s.finish_reason == "length" for s in sinks)
    assert n_tokens <= engine.steps <= n_tokens + 2  # not ~ n_requests * n_tokens
    # Every step advanced every request: each request got its k-th token in the same step.
    assert len({tuple(s.steps) for s in sinks}) == 1
    assert sinks[0].steps == list(range(sinks[0].steps[0], sinks[0].steps[0] + n_tokens))


def test_late_request_joins_running_batch(corpus):
    async def scenario():
        engine = MockEngine(corpus, FAST)
        first, second = FakeSink(engine), FakeSink(engine)
        engine.add_request(request("a", max_tokens=40, ignore_eos=True, seed=1), first)
        task = asyncio.create_task(engine.run())
        try:
            while len(first.calls) < 10:
                await asyncio.sleep(0)
            engine.add_request(request("b", max_tokens=10, ignore_eos=True, seed=2), second)
            await asyncio.wait_for(asyncio.gather(first.done.wait(), second.done.wait()), TIMEOUT_S)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return engine, first, second

    engine, first, second = asyncio.run(scenario())
    assert engine.steps <= 42
    assert set(second.steps) <= set(first.steps)


def test_max_num_seqs_limits_the_batch(corpus):
    reqs = [request(f"r{i}", max_tokens=10, ignore_eos=True, seed=i) for i in range(4)]
    engine, sinks = generate(corpus, reqs, EngineSettings(speedup_ratio=1e12, max_num_seqs=2))
    assert all(len(s.tokens) == 10 for s in sinks)
    assert 20 <= engine.steps <= 22
    assert max(sinks[0].steps) < min(sinks[2].steps)


# ---- timing model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens, expected", [
    (0, 0.0),
    (-3, 0.0),
    (1, 4.209989e-7 + 1.518344e-2 + 16.50142),
    (1000, 4.209989e-7 * 1e6 + 15.18344 + 16.50142),
    (8192, 4.209989e-7 * 8192 ** 2 + 1.518344e-2 * 8192 + 16.50142),
])
def test_prefill_ms(tokens, expected):
    assert math.isclose(prefill_ms(tokens), expected, rel_tol=1e-12)


def test_prefill_ms_sample_values():
    assert math.isclose(prefill_ms(1000), 32.1058589, rel_tol=1e-9)
    assert prefill_ms(2000) > prefill_ms(1000) > prefill_ms(1) > 16.5


@pytest.mark.parametrize("usage, expected", [
    (0.0, 5.74),
    (0.5, -25.74 * 0.25 + 54.01 * 0.5 + 5.74),
    (1.0, 34.01),
    (3.0, 1.0),  # the quadratic goes negative: floored at 1 ms
])
def test_decode_ms(usage, expected):
    assert math.isclose(decode_ms(usage), expected, rel_tol=1e-12)


def test_a_step_lasts_its_time_over_speedup_with_the_mocks_own_work_counted(corpus, monkeypatch):
    """On a clock the test keeps: each step's work takes 1 ms, and the step then sleeps what is left of its
    simulated time; the next step starts when the one before ended."""
    clock = [100.0]
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay, result=None):
        delays.append(delay)
        clock[0] += delay
        return await real_sleep(0)

    monkeypatch.setattr(engine_module.asyncio, "sleep", fake_sleep)
    engine = MockEngine(corpus, EngineSettings(speedup_ratio=2.0))
    step_ms: list[float] = []
    real_step = engine.step

    def recording_step() -> float:
        step_ms.append(real_step())
        clock[0] += 0.001  # the mock's own work in the step
        return step_ms[-1]

    async def on_the_clock() -> list[FakeSink]:
        asyncio.get_running_loop().time = lambda: clock[0]
        return await _generate(engine, [request("t", list(range(100, 300)), max_tokens=3, ignore_eos=True)])

    engine.step = recording_step
    sinks = asyncio.run(on_the_clock())
    assert len(sinks[0].tokens) == 3
    assert len(step_ms) == 3
    assert delays == pytest.approx([ms / 1000.0 / 2.0 - 0.001 for ms in step_ms], abs=1e-9), (delays, step_ms)
    assert step_ms[0] > step_ms[1] > 0  # the first step prefills 200 tokens


def test_step_time_samples(corpus):
    # 200 prompt tokens: the first step prefills them all and emits the first token (no decode yet), later steps
    # decode at the KV usage of the request's ceil(201 / 16) = 13 blocks out of 100.
    engine = MockEngine(corpus, EngineSettings(num_gpu_blocks=100, block_size=16))
    sink = FakeSink(engine)
    engine.add_request(request("t", list(range(100, 300)), max_tokens=3, ignore_eos=True), sink)
    assert math.isclose(engine.step(), prefill_ms(200), rel_tol=1e-12)
    assert sink.tokens == []  # outputs wait for the step's simulated time
    engine.deliver()
    assert len(sink.tokens) == 1
    assert math.isclose(engine.step(), decode_ms(13 / 100), rel_tol=1e-12)
    assert math.isclose(engine.step(), decode_ms(13 / 100), rel_tol=1e-12)
    engine.deliver()
    assert sink.finish_reason == "length" and len(sink.tokens) == 3


def test_chunked_prefill_time_samples(corpus):
    engine = MockEngine(corpus, EngineSettings(num_gpu_blocks=100, block_size=16, max_num_batched_tokens=64))
    sink = FakeSink(engine)
    engine.add_request(request("t", list(range(100, 300)), max_tokens=2, ignore_eos=True), sink)
    for _ in range(3):
        assert math.isclose(engine.step(), prefill_ms(64), rel_tol=1e-12)
        engine.deliver()
        assert sink.calls == []
    assert math.isclose(engine.step(), prefill_ms(8), rel_tol=1e-12)
    engine.deliver()
    assert len(sink.tokens) == 1


def test_tiny_delays_do_not_sleep(corpus, monkeypatch):
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay, result=None):
        delays.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr(engine_module.asyncio, "sleep", fake_sleep)
    generate(corpus, [request(max_tokens=3, ignore_eos=True)], EngineSettings(speedup_ratio=1e9))
    assert delays and all(d == 0 for d in delays)


# ---- corpus ----------------------------------------------------------------------------------------


def test_corpus_layout(tokenizer):
    corpus = Corpus(tokenizer, "  First paragraph here.\n\n\n\nSecond one.  \n\n   \n\nThird!")
    paragraphs = ["First paragraph here.", "Second one.", "Third!"]
    assert corpus.paragraph_count == 3
    expected: list[int] = []
    for i, text in enumerate(paragraphs):
        assert corpus.paragraph_start(i) == len(expected)
        expected += tokenizer.encode(text + "\n\n", add_special_tokens=False).ids
    assert list(corpus.tokens) == expected
    ends = [i for i in range(len(expected)) if corpus.token_at(i)[1]]
    assert ends == [corpus.paragraph_start(1) - 1, corpus.paragraph_start(2) - 1, len(expected) - 1]
    assert corpus.vocab_size == tokenizer.get_vocab_size()


def test_corpus_token_at_wraps(tokenizer):
    corpus = Corpus(tokenizer, ONE_PARAGRAPH)
    n = len(corpus.tokens)
    assert corpus.token_at(n) == corpus.token_at(0)
    assert corpus.token_at(2 * n + 3) == corpus.token_at(3)
    assert corpus.token_at(n - 1)[1] is True
    assert corpus.token_at(0)[1] is False


@pytest.mark.parametrize("text", ["", "\n\n  \n\n"])
def test_empty_corpus_rejected(tokenizer, text):
    with pytest.raises(ValueError):
        Corpus(tokenizer, text)


def test_bundled_corpus(tokenizer, corpus):
    assert corpus.paragraph_count > 10
    assert len(corpus.tokens) == len(corpus.ends)
    assert sum(corpus.ends) == corpus.paragraph_count
    text = tokenizer.decode(list(corpus.tokens[corpus.starts[0]:corpus.starts[1]]))
    assert text.endswith("\n\n") and text.strip()


# ---- disaggregated serving: prefill and decode legs --------------------------------------------------------


def test_a_prefill_leg_answers_where_its_kv_is_and_a_decode_leg_receives_it(corpus):
    prompt = list(range(100, 150))  # 3 full blocks of 16 and a partial one
    prefill_engine, [prefill] = generate(corpus, [msgspec.structs.replace(
        request("p1", prompt, max_tokens=1, ignore_eos=True), remote_decode=True)])
    params = prefill.kv_transfer_params
    assert prefill.finish_reason == "length" and len(prefill.tokens) == 1
    assert params["remote_engine_id"] == prefill_engine.engine_id and params["remote_request_id"] == "p1"
    assert len(params["remote_block_ids"]) == 3 and params["remote_prefill_cached_tokens"] == 0
    assert prefill_engine.prompt_tokens.local_compute == 50
    decode_engine, [decode] = generate(corpus, [msgspec.structs.replace(
        request("d1", prompt, max_tokens=5, ignore_eos=True, seed=3), kv_transfer_params=params)])
    assert len(decode.tokens) == 5 and decode.finish_reason == "length" and decode.errors[-1] is None
    sources = decode_engine.prompt_tokens
    assert (sources.local_compute, sources.local_cache_hit, sources.external_kv_transfer, sources.kv_transfers) == (
        0, 0, 50, 1)
    # the same request served whole makes the same tokens (the transfer changes where the KV came from, not the output)
    whole, [served] = generate(corpus, [request("w1", prompt, max_tokens=5, ignore_eos=True, seed=3)])
    assert served.tokens == decode.tokens and whole.prompt_tokens.local_compute == 50


def test_a_decode_leg_reports_the_prefill_side_cache_hit_and_counts_its_own(corpus):
    prompt = list(range(300, 340))
    params = {"remote_engine_id": "p", "prompt_digest": prompt_digest(request(prompt=prompt)),
              "remote_prefill_cached_tokens": 32}
    legs = [msgspec.structs.replace(request(rid, prompt, max_tokens=2, ignore_eos=True), kv_transfer_params=params)
            for rid in ("d1", "d2")]
    engine = MockEngine(corpus, FAST)

    async def one_after_the_other() -> list[FakeSink]:
        return [(await _generate(engine, [leg]))[0] for leg in legs]

    sinks = asyncio.run(one_after_the_other())
    assert [sink.cached[0] for sink in sinks] == [32, 32]  # the prefill worker's hit, as vLLM reports it
    # the second leg found 2 blocks of 16 in this engine's own cache and received only the rest
    assert (engine.prompt_tokens.local_cache_hit, engine.prompt_tokens.external_kv_transfer) == (32, 40 + 8)


@pytest.mark.parametrize("params, problem", [
    ({"prompt_digest": "0"}, "remote_engine_id"),
    ({"remote_engine_id": "p", "prompt_digest": "0"}, "another prompt"),
])
def test_a_decode_leg_with_unusable_params_fails(corpus, params, problem):
    engine = MockEngine(corpus, FAST)
    sink = FakeSink(engine)
    engine.add_request(msgspec.structs.replace(request(), kv_transfer_params=params), sink)
    assert sink.finish_reason == "error" and problem in sink.errors[-1]
    assert engine.prompt_tokens.kv_transfers == 0


def test_transfer_time_follows_bandwidth_and_kv_size():
    settings = EngineSettings(kv_bytes_per_token=1_000_000, kv_transfer_gbps=2.0)
    assert settings.transfer_ms(4000) == pytest.approx(2000.0)  # 4 GB at 2 GB/s: 2 s
