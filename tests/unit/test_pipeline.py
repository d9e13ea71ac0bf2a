"""Unit tests for frontend.postprocess.pipeline (engine outputs -> client deltas)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from frontend.postprocess.pipeline import Delta, OutputPipeline
from frontend.protocol.engine import RequestOutput, TokenLogprob
from frontend.protocol.errors import EngineError, InvalidRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = REPO_ROOT / "config" / "models" / "tiny" / "tokenizer.json"

TEXT = "Hello world. STOP here, then more text follows after."
UNICODE_TEXT = "héllo wörld 日本語 🙂🎉 naïve café"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TINY_TOKENIZER))


def pipeline(tokenizer: Tokenizer, stop: list[str] | None = None, *, include: bool = False,
             stages=None) -> OutputPipeline:
    return OutputPipeline(tokenizer, stop=stop or [], include_stop_str_in_output=include,
                          skip_special_tokens=True, stages=stages)


def out(ids: list[int], finish: str | None = None, **kwargs) -> RequestOutput:
    return RequestOutput("req-1", ids, finish, **kwargs)


def chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def run_batches(p: OutputPipeline, batches: list[list[RequestOutput]]) -> tuple[str, list[Delta]]:
    deltas = [p.feed(batch) for batch in batches]
    return "".join(d.text for d in deltas), deltas


# ---- text ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [TEXT, UNICODE_TEXT])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_batches_concatenate_to_decode(tokenizer, text, size):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    parts = chunks(ids, size)
    batches = [[out(part)] for part in parts[:-1]] + [[out(parts[-1], "length")]]
    p = pipeline(tokenizer)
    full, deltas = run_batches(p, batches)
    assert full == tokenizer.decode(ids) == text
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == "length"
    assert all("\ufffd" not in d.text for d in deltas)


def test_several_outputs_in_one_batch(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    batch = [out(part) for part in chunks(ids, 3)]
    p = pipeline(tokenizer)
    delta = p.feed(batch)
    assert delta.text == TEXT
    assert delta.finish_reason is None
    end = p.feed([out([], "stop")])
    assert end.text == "" and end.finish_reason == "stop"


def test_empty_final_output_flushes(tokenizer):
    ids = tokenizer.encode(UNICODE_TEXT, add_special_tokens=False).ids
    p = pipeline(tokenizer)
    text, deltas = run_batches(p, [[out([i])] for i in ids] + [[out([], "stop")]])
    assert text == UNICODE_TEXT
    assert deltas[-1].finish_reason == "stop"


def test_special_tokens_skipped(tokenizer):
    ids = tokenizer.encode("Hi there", add_special_tokens=False).ids
    p = pipeline(tokenizer)
    text, _ = run_batches(p, [[out(ids)], [out([2], "stop")]])  # 2 = <|im_end|>
    assert text == "Hi there"


# ---- finish reasons ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_finish_reason_propagates(tokenizer, reason):
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    p = pipeline(tokenizer)
    delta = p.feed([out(ids[:4]), out(ids[4:], reason)])
    assert delta.finish_reason == reason
    assert p.finish_reason == reason
    assert delta.text == TEXT
    assert p.stopped_by_string is False
    assert delta.error is None


def test_abort_maps_to_stop(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    p = pipeline(tokenizer)
    delta = p.feed([out(ids[:5], "abort")])
    assert delta.finish_reason == "stop"
    assert p.finish_reason == "stop"
    assert delta.text == tokenizer.decode(ids[:5])


def test_error_output_carries_message(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    p = pipeline(tokenizer)
    first = p.feed([out(ids[:3])])
    assert first.error is None
    delta = p.feed([out([], "error", error="engine exploded: CUDA OOM")])
    assert delta.finish_reason == "error"
    assert isinstance(delta.error, EngineError) and delta.error.status == 502
    assert delta.error.message == "engine exploded: CUDA OOM"


def test_an_error_blaming_the_request_is_a_400(tokenizer):
    p = pipeline(tokenizer)
    delta = p.feed([RequestOutput("r", [], "error", error="top_p must be in (0, 1]", invalid=True)])
    assert isinstance(delta.error, InvalidRequest) and delta.error.status == 400
    assert delta.error.message == "top_p must be in (0, 1]"


def test_outputs_after_finish_in_same_batch_are_ignored(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    p = pipeline(tokenizer)
    delta = p.feed([out(ids[:3], "length"), out(ids[3:])])
    assert delta.finish_reason == "length"
    assert delta.text == tokenizer.decode(ids[:3])
    assert p.completion_tokens == 3


# ---- stop strings ----------------------------------------------------------------------------------


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_stop_string_split_across_batches(tokenizer):
    ids = _ids(tokenizer, TEXT)
    # ' here' | ',' | ' then' in three separate batches; the stop string spans all three tokens.
    here = ids.index(tokenizer.token_to_id("Ġhere"))
    batches = [[out(ids[:here + 1])], [out([ids[here + 1]])], [out(ids[here + 2:here + 4])], [out(ids[here + 4:])]]
    p = pipeline(tokenizer, ["here, th"])
    deltas = [p.feed(batches[0]), p.feed(batches[1]), p.feed(batches[2])]
    assert [d.finish_reason for d in deltas] == [None, None, "stop"]
    text = "".join(d.text for d in deltas)
    assert text == "Hello world. STOP "
    assert "here" not in text
    assert p.stopped_by_string is True
    assert p.finish_reason == "stop"


def test_stop_string_split_across_outputs_of_one_batch(tokenizer):
    ids = _ids(tokenizer, TEXT)
    p = pipeline(tokenizer, ["world. ST"])
    delta = p.feed([out([i]) for i in ids])
    assert delta.text == "Hello "
    assert delta.finish_reason == "stop"
    assert p.stopped_by_string is True


def test_stop_string_included_when_asked(tokenizer):
    ids = _ids(tokenizer, TEXT)
    p = pipeline(tokenizer, ["here, th"], include=True)
    text, deltas = run_batches(p, [[out([i])] for i in ids])
    assert text.startswith("Hello world. STOP here, th")
    assert text == "Hello world. STOP here, th"
    assert deltas[-1].finish_reason == "stop"


def test_stop_string_beats_engine_finish_in_same_output(tokenizer):
    ids = _ids(tokenizer, TEXT)
    p = pipeline(tokenizer, ["STOP"])
    delta = p.feed([out(ids, "length")])
    assert delta.text == "Hello world. "
    assert delta.finish_reason == "stop"
    assert p.stopped_by_string is True


def test_held_back_prefix_released_at_finish(tokenizer):
    # "world" is a prefix of the stop string: it is held back, then released when the engine finishes.
    ids = _ids(tokenizer, "Hello world")
    p = pipeline(tokenizer, ["world peace"])
    first = p.feed([out(ids)])
    assert first.text == "Hello "
    end = p.feed([out([], "length")])
    assert end.text == "world"
    assert end.finish_reason == "length"
    assert p.stopped_by_string is False


def test_no_match_passes_everything(tokenizer):
    ids = _ids(tokenizer, TEXT)
    p = pipeline(tokenizer, ["zzz", "never"])
    text, deltas = run_batches(p, [[out(part)] for part in chunks(ids, 2)] + [[out([], "stop")]])
    assert text == TEXT
    assert p.stopped_by_string is False


# ---- counters and logprobs -------------------------------------------------------------------------


def test_completion_tokens_counted(tokenizer):
    ids = _ids(tokenizer, TEXT)
    p = pipeline(tokenizer)
    for part in chunks(ids, 4):
        p.feed([out(part)])
    p.feed([out([], "stop")])
    assert p.completion_tokens == len(ids)


def test_cached_tokens_kept(tokenizer):
    p = pipeline(tokenizer)
    p.feed([out([42], cached_tokens=16)])
    p.feed([out([532])])
    assert p.cached_tokens == 16


def test_logprobs_collected_per_batch(tokenizer):
    lp1 = [TokenLogprob(42, -0.1, [(42, -0.1), (7, -2.0)])]
    lp2 = [TokenLogprob(532, -0.3, [(532, -0.3)])]
    p = pipeline(tokenizer)
    delta = p.feed([out([42], logprobs=lp1), out([532], logprobs=lp2)])
    assert delta.logprobs == lp1 + lp2
    assert p.feed([out([372])]).logprobs is None


# ---- text stages -----------------------------------------------------------------------------------


class HoldAll:
    """A stage that releases nothing until the end."""

    def __init__(self) -> None:
        self.held = ""
        self.finished = 0

    def feed(self, text: str) -> str:
        self.held += text
        return ""

    def finish(self) -> str:
        self.finished += 1
        held, self.held = self.held, ""
        return held.upper()


def test_stages_run_after_stop_strings(tokenizer):
    ids = _ids(tokenizer, TEXT)
    stage = HoldAll()
    p = pipeline(tokenizer, ["STOP"], stages=[stage])
    deltas = [p.feed([out([i])]) for i in ids[:6]]
    assert [d.text for d in deltas[:-1]] == [""] * 5
    assert deltas[-1].text == "HELLO WORLD. "
    assert deltas[-1].finish_reason == "stop"
    assert stage.finished == 1


def test_stages_finish_on_engine_finish(tokenizer):
    ids = _ids(tokenizer, "Hello world")
    stage = HoldAll()
    p = pipeline(tokenizer, stages=[stage])
    assert p.feed([out(ids)]).text == ""
    assert p.feed([out([], "length")]).text == "HELLO WORLD"
    assert stage.finished == 1


# ---- feed_each: one delta per engine output (a streamed response's one event per output) -------------------


def test_feed_each_gives_one_delta_per_output(tokenizer):
    ids = tokenizer.encode("one two three four five", add_special_tokens=False).ids
    each = pipeline(tokenizer).feed_each([out([i]) for i in ids])
    folded = pipeline(tokenizer).feed([out([i]) for i in ids])
    assert len(each) == len(ids)
    assert "".join(d.text for d in each) == folded.text == "one two three four five"
    assert all(d.finish_reason is None for d in each)


def test_feed_each_stops_at_the_first_finish(tokenizer):
    ids = tokenizer.encode("alpha beta gamma", add_special_tokens=False).ids
    p = pipeline(tokenizer, stop=["beta"])
    each = p.feed_each([out([i]) for i in ids] + [out([ids[0]], "length")])
    assert each[-1].finish_reason == "stop" and p.stopped_by_string
    assert "".join(d.text for d in each) == "alpha "


def test_feed_each_reports_the_error_last(tokenizer):
    ids = tokenizer.encode("ok then", add_special_tokens=False).ids
    each = pipeline(tokenizer).feed_each([out([ids[0]]), out([], "error", error="boom"), out([ids[1]])])
    assert len(each) == 2
    assert each[0].error is None and each[0].text
    assert isinstance(each[1].error, EngineError)
