"""nvext resolution (frontend.pipeline.nvext), engine requests built from it, several-choice helpers and logprob shapes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from tokenizers import Tokenizer

from frontend.http.logprobs import chat_logprobs, completion_logprobs, token_texts
from frontend.pipeline.generation import SharedObserver, combined_usage, engine_request
from frontend.pipeline.nvext import (NO_EXTENSIONS, annotation, check_token_ids, extensions, prompt_annotations,
                                     raw_chat_prompt, response_nvext)
from frontend.protocol.engine import TokenLogprob
from frontend.protocol.errors import InvalidRequest
from frontend.protocol.openai import ChatCompletionRequest, CompletionRequest, PromptTokensDetails, Usage

TINY_TOKENIZER = Path(__file__).resolve().parents[2] / "config" / "models" / "tiny" / "tokenizer.json"


def chat(**fields) -> ChatCompletionRequest:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.decode(json.dumps(body), type=ChatCompletionRequest)


def completion(**fields) -> CompletionRequest:
    return msgspec.json.decode(json.dumps({"model": "tiny", "prompt": "hi", **fields}), type=CompletionRequest)


def served_model() -> SimpleNamespace:
    return SimpleNamespace(name="tiny", card=SimpleNamespace(context_length=100), eos_token_ids=[2])


GATEWAY = SimpleNamespace(new_request_id=lambda: "r")


# ---- extensions ------------------------------------------------------------------------------------------


def test_no_nvext_is_the_shared_empty_value():
    assert extensions(chat(), {}) is NO_EXTENSIONS


def test_fields_resolved():
    ext = extensions(chat(nvext={"greed_sampling": True, "use_raw_prompt": True, "token_data": [5, 6],
                                 "max_thinking_tokens": 9, "backend_instance_id": 42,
                                 "annotations": ["request_id", "llm_metrics", "possible_tool_call"],
                                 "extra_fields": ["timing", "routed_experts"]}), {})
    assert (ext.greedy, ext.raw_prompt, ext.token_data, ext.max_thinking_tokens) == (True, True, [5, 6], 9)
    assert ext.pinned == "42"  # Dynamo's ids are u64; ours are strings
    assert ext.annotations == {"request_id", "llm_metrics"} and ext.metrics_events  # unknown names ignored
    assert ext.extra_fields == {"timing"}


@pytest.mark.parametrize("headers, nvext, pinned", [
    ({"x-worker-instance-id": "a"}, {"backend_instance_id": "b"}, "a"),  # the header wins
    ({"x-dynamo-worker-instance-id": "c"}, None, "c"),
    ({}, {"backend_instance_id": "b"}, "b"),
    ({}, None, None),
])
def test_pinning(headers, nvext, pinned):
    assert extensions(chat(nvext=nvext), headers).pinned == pinned


def test_disabled_ignores_nvext_and_pinning_headers():
    request = chat(nvext={"greed_sampling": True, "backend_instance_id": "b"})
    assert extensions(request, {"x-worker-instance-id": "a"}, enabled=False) is NO_EXTENSIONS


def test_empty_token_data_rejected():
    with pytest.raises(InvalidRequest) as info:
        extensions(chat(nvext={"token_data": []}), {})
    assert info.value.param == "nvext.token_data"


def test_bad_nvext_field_is_a_400_naming_it():
    with pytest.raises(msgspec.ValidationError, match=r"nvext\.max_thinking_tokens"):
        chat(nvext={"max_thinking_tokens": -1})
    request = ChatCompletionRequest(model="tiny", messages=[], nvext={"annotations": 3})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as info:  # a translation's dict is checked the same way
        extensions(request, {})
    assert info.value.param == "nvext.annotations"


def test_raw_chat_prompt_joins_message_text():
    request = chat(messages=[{"role": "system", "content": "<|im_start|>system\nBe brief."},
                             {"role": "user", "content": [{"type": "text", "text": "<|im_end|>\n"},
                                                          {"type": "image_url", "image_url": {"url": "x"}},
                                                          {"type": "text", "text": "Hi"}]}])
    assert raw_chat_prompt(request) == "<|im_start|>system\nBe brief.<|im_end|>\nHi"


def test_check_token_ids():
    check_token_ids([0, 5], 6, "prompt")
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        check_token_ids([6], 6, "nvext.token_data")


# ---- engine requests -------------------------------------------------------------------------------------


def test_greedy_drops_sampling_settings():
    request = chat(temperature=1.5, top_p=0.5, top_k=3, min_p=0.1, presence_penalty=1.0, repetition_penalty=1.2,
                   seed=4, nvext={"greed_sampling": True})
    sampling = engine_request(GATEWAY, request, served_model(), [1], 5, None,
                              ext=extensions(request, {})).sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p) == (0.0, None, None, None)
    assert (sampling.presence_penalty, sampling.repetition_penalty, sampling.seed) == (None, None, 4)


def test_deprecated_nvext_fields_apply_when_the_root_is_unset():
    request = chat(nvext={"ignore_eos": True, "min_tokens": 3, "top_k": 7, "repetition_penalty": 1.1})
    built = engine_request(GATEWAY, request, served_model(), [1], 10, None, ext=extensions(request, {}))
    assert built.stop.ignore_eos and built.eos_token_ids == []
    assert (built.stop.min_tokens, built.sampling.top_k, built.sampling.repetition_penalty) == (3, 7, 1.1)
    root = chat(min_tokens=1, top_k=2, nvext={"min_tokens": 3, "top_k": 7})
    built = engine_request(GATEWAY, root, served_model(), [1], 10, None, ext=extensions(root, {}))
    assert (built.stop.min_tokens, built.sampling.top_k) == (1, 2)


def test_thinking_budget_from_nvext():
    request = chat(nvext={"max_thinking_tokens": 6})
    built = engine_request(GATEWAY, request, served_model(), [1], 10, None, ext=extensions(request, {}))
    assert built.stop.max_thinking_tokens == 6


@pytest.mark.parametrize("seed, choice, expected", [
    (10, 0, 10), (10, 3, 13), (2**63 - 1, 1, -(2**63)), (None, 2, None),
])
def test_choice_seeds(seed, choice, expected):
    built = engine_request(GATEWAY, completion(seed=seed), served_model(), [1], 5, None, choice=choice)
    assert built.sampling.seed == expected


# ---- several choices ----------------------------------------------------------------------------------------


def generation(prompt: int, completion_tokens: int, cached: int = 0) -> SimpleNamespace:
    pipeline = SimpleNamespace(completion_tokens=completion_tokens, cached_tokens=cached)
    return SimpleNamespace(prompt_tokens=prompt, pipeline=pipeline,
                           usage=lambda: Usage(prompt, completion_tokens, prompt + completion_tokens))


def test_combined_usage_counts_each_prompt_once():
    usage = combined_usage([[generation(10, 3), generation(10, 5, cached=8)], [generation(4, 1), generation(4, 2)]])
    assert usage == Usage(14, 11, 25, PromptTokensDetails(8))
    assert combined_usage([[generation(7, 2)]]) == Usage(7, 2, 9)


def test_shared_observer_finishes_the_request_once():
    calls = []
    inner = SimpleNamespace(started=1.0, tokens=lambda n: calls.append(("tokens", n)),
                            finished=lambda *args, **kwargs: calls.append(("finished", args, kwargs)))
    shared = SharedObserver(inner, 3, prompt_tokens=12)
    shared.tokens(2)
    shared.finished(12, 5, 0, cancelled=False, error=False)
    shared.finished(12, 4, 8, cancelled=True, error=False)
    assert [c[0] for c in calls] == ["tokens"]
    shared.drop(1)  # the third choice never started
    assert calls[-1] == ("finished", (12, 9, 8), {"cancelled": True, "error": False})


# ---- annotations and response nvext ---------------------------------------------------------------------------


def test_annotation_event_bytes():
    assert annotation("request_id", "abc") == b'event: request_id\ndata: "abc"\n\n'


def test_prompt_annotations_in_order():
    tokenizer = Tokenizer.from_file(str(TINY_TOKENIZER))
    ids = tokenizer.encode("Hello there", add_special_tokens=False).ids
    ext = extensions(chat(nvext={"annotations": ["token_ids", "formatted_prompt", "request_id"]}), {})
    events = prompt_annotations(ext, "r-1", [ids, ids[:1]], tokenizer).split(b"\n\n")[:-1]
    assert [e.split(b"\n")[0] for e in events] == [b"event: request_id", b"event: formatted_prompt",
                                                   b"event: formatted_prompt", b"event: token_ids",
                                                   b"event: token_ids"]
    assert json.loads(events[1].split(b"data: ")[1]) == "Hello there"
    assert json.loads(events[3].split(b"data: ")[1]) == ids


def test_response_nvext():
    assert response_nvext(NO_EXTENSIONS, None) is msgspec.UNSET  # type: ignore[arg-type]
    ext = extensions(chat(nvext={"extra_fields": ["worker_id", "timing"]}), {})
    gen = SimpleNamespace(route=SimpleNamespace(instance_id="w1"), started=100.0, first_token_at=100.010,
                          finished_at=100.050, pipeline=SimpleNamespace(completion_tokens=5), prefill_worker=None)
    body = json.loads(msgspec.json.encode(response_nvext(ext, gen)))
    assert body["worker_id"] == {"prefill_worker_id": "w1", "decode_worker_id": "w1"}  # served whole
    gen.prefill_worker = "p1"  # disaggregated: its prefill leg ran on p1
    worker = json.loads(msgspec.json.encode(response_nvext(ext, gen)))["worker_id"]
    assert worker == {"prefill_worker_id": "p1", "decode_worker_id": "w1"}
    timing = body["timing"]
    assert timing["ttft_ms"] == pytest.approx(10, abs=0.01) and timing["total_time_ms"] == pytest.approx(50, abs=0.01)
    assert timing["itl_ms"] == pytest.approx(10, abs=0.01) and timing["request_received_ms"] > 1.6e12


# ---- logprob shapes ---------------------------------------------------------------------------------------------


def test_token_bytes_join_to_the_text():
    tokenizer = Tokenizer.from_file(str(TINY_TOKENIZER))
    text = "caf\u00e9 \u4e16\u754c \U0001f389 <|im_end|>"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    content = chat_logprobs(tokenizer, [TokenLogprob(i, -0.5, [(i, -0.5)]) for i in ids]).content
    assert any(entry.token == "\ufffd" for entry in content)  # parts of multi-byte characters
    assert bytes(b for entry in content for b in entry.bytes).decode() == text
    assert all(entry.top_logprobs[0].bytes == entry.bytes for entry in content)
    assert token_texts(tokenizer) is token_texts(tokenizer)


def test_completion_top_logprobs_always_hold_the_sampled_token():
    tokenizer = Tokenizer.from_file(str(TINY_TOKENIZER))
    a, b = tokenizer.encode("Hello world", add_special_tokens=False).ids[:2]
    shaped = completion_logprobs(tokenizer, [TokenLogprob(a, -0.1, []), TokenLogprob(b, -0.2, [(a, -0.05)])], 3)
    first, second = tokenizer.decode([a]), tokenizer.decode([b])
    assert shaped.tokens == [first, second]
    assert shaped.top_logprobs == [{first: -0.1}, {first: -0.05, second: -0.2}]
    assert shaped.text_offset == [3, 3 + len(first)]
