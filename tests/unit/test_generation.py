"""Unit tests for the request helpers of frontend.pipeline.generation and frontend.http.completions.prompts_of."""

from __future__ import annotations

import json
from types import SimpleNamespace

import msgspec
import pytest

from frontend.http.completions import prompts_of
from frontend.pipeline.generation import engine_request, max_new_tokens, reject_unsupported, stop_strings
from frontend.protocol.engine import GenerateRequest, GuidedDecoding
from frontend.protocol.errors import ContextLengthExceeded, InvalidRequest, RequestError
from frontend.protocol.openai import ChatCompletionRequest, CompletionRequest


def chat(**fields) -> ChatCompletionRequest:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.decode(json.dumps(body), type=ChatCompletionRequest)


def completion(**fields) -> CompletionRequest:
    body = {"model": "tiny", "prompt": "hi", **fields}
    return msgspec.json.decode(json.dumps(body), type=CompletionRequest)


def served_model(context_length: int = 100, eos_token_ids: list[int] | None = None) -> SimpleNamespace:
    """Stand-in for discovery.ServedModel: only what the helpers read."""
    return SimpleNamespace(name="tiny", card=SimpleNamespace(context_length=context_length),
                           eos_token_ids=[2, 0] if eos_token_ids is None else eos_token_ids)


# ---- prompts_of ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, expected", [
    ("Once upon a time", ["Once upon a time"]),
    ("", [""]),
    (["only one"], ["only one"]),
    ([1, 2, 3], [[1, 2, 3]]),
    ([7], [[7]]),
    ([[4, 5, 6]], [[4, 5, 6]]),
    (["a", "b"], ["a", "b"]),
    ([[1], [2, 3]], [[1], [2, 3]]),
])
def test_prompt_forms(prompt, expected):
    assert prompts_of(prompt) == expected


@pytest.mark.parametrize("prompt", [
    ["a", 1],
    [1, "a"],
    [[1, 2], 3],
    ["a", [1]],
])
def test_mixed_prompt_list_rejected(prompt):
    with pytest.raises(InvalidRequest) as info:
        prompts_of(prompt)
    assert info.value.param == "prompt"
    assert info.value.status == 400


def test_empty_prompt_list_rejected():
    with pytest.raises(InvalidRequest, match="empty") as info:
        prompts_of([])
    assert info.value.param == "prompt"


def test_prompts_from_decoded_request():
    assert prompts_of(completion(prompt=[[9, 8]]).prompt) == [[9, 8]]
    with pytest.raises(InvalidRequest):
        prompts_of(completion(prompt=["x", 3]).prompt)


# ---- reject_unsupported ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [chat, completion])
def test_n_up_to_128_accepted(make):
    reject_unsupported(make(n=128))
    with pytest.raises(msgspec.ValidationError, match="n"):
        make(n=129)


def test_top_logprobs_needs_logprobs():
    reject_unsupported(chat(logprobs=True, top_logprobs=3))
    reject_unsupported(chat(top_logprobs=0))
    with pytest.raises(InvalidRequest) as info:
        reject_unsupported(chat(top_logprobs=2))
    assert info.value.param == "top_logprobs"


@pytest.mark.parametrize("make", [chat, completion])
def test_logit_bias_rejected(make):
    with pytest.raises(InvalidRequest) as info:
        reject_unsupported(make(logit_bias={"42": 5.0}))
    assert info.value.param == "logit_bias"


@pytest.mark.parametrize("fields, param", [({"best_of": 2}, "best_of"), ({"suffix": "tail"}, "suffix")])
def test_completion_only_features_rejected(fields, param):
    with pytest.raises(InvalidRequest) as info:
        reject_unsupported(completion(**fields))
    assert info.value.param == param


@pytest.mark.parametrize("request_", [
    chat(), completion(), chat(n=1, logit_bias={}), completion(best_of=1, suffix="", logit_bias={}),
    chat(stop=["x"], temperature=0.5, seed=1, tools=[{"function": {"name": "f"}}]),
])
def test_supported_requests_pass(request_):
    reject_unsupported(request_)


# ---- stop_strings ----------------------------------------------------------------------------------


def test_stop_strings():
    assert stop_strings(chat()) == []
    assert stop_strings(chat(stop="END")) == ["END"]
    assert stop_strings(chat(stop=["a", "", "b"])) == ["a", "b"]
    assert stop_strings(completion(stop=[])) == []
    assert stop_strings(completion(stop=["\n\n"])) == ["\n\n"]


# ---- max_new_tokens --------------------------------------------------------------------------------


def test_default_budget_is_rest_of_context():
    assert max_new_tokens(None, 30, served_model(100), 0) == 70
    assert max_new_tokens(None, 99, served_model(100), 0) == 1


def test_requested_budget_kept():
    assert max_new_tokens(10, 30, served_model(100), 0) == 10
    assert max_new_tokens(70, 30, served_model(100), 0) == 70  # exactly fills the context


def test_over_context_request_rejected():
    with pytest.raises(ContextLengthExceeded) as info:
        max_new_tokens(71, 30, served_model(100), 0)
    error = info.value
    assert isinstance(error, InvalidRequest) and isinstance(error, RequestError)
    assert error.status == 400
    assert error.code == "context_length_exceeded"
    assert error.error_type == "invalid_request_error"
    assert "100" in error.message and "101" in error.message
    assert (error.prompt_tokens, error.requested, error.context_length) == (30, 71, 100)  # for a door's own words


@pytest.mark.parametrize("prompt_len", [100, 150])
def test_prompt_filling_context_rejected(prompt_len):
    with pytest.raises(ContextLengthExceeded) as info:
        max_new_tokens(None, prompt_len, served_model(100), 0)
    assert info.value.code == "context_length_exceeded"
    assert info.value.status == 400
    assert str(prompt_len) in info.value.message
    assert (info.value.prompt_tokens, info.value.requested, info.value.context_length) == (prompt_len, None, 100)
    with pytest.raises(ContextLengthExceeded):
        max_new_tokens(1, prompt_len, served_model(100), 0)


def test_min_tokens_above_max_rejected():
    with pytest.raises(InvalidRequest) as info:
        max_new_tokens(5, 10, served_model(100), 6)
    assert not isinstance(info.value, ContextLengthExceeded)
    assert info.value.param == "min_tokens"
    assert info.value.status == 400


def test_min_tokens_above_default_budget_rejected():
    with pytest.raises(InvalidRequest) as info:
        max_new_tokens(None, 95, served_model(100), 6)
    assert info.value.param == "min_tokens"


def test_min_tokens_equal_to_max_accepted():
    assert max_new_tokens(5, 10, served_model(100), 5) == 5
    assert max_new_tokens(None, 95, served_model(100), 5) == 5


# ---- engine_request --------------------------------------------------------------------------------


def test_engine_request_built_from_chat():
    gateway = SimpleNamespace(new_request_id=lambda: "req-7")
    request = chat(temperature=0.3, top_p=0.9, top_k=5, seed=11, stop_token_ids=[9], min_tokens=2,
                   presence_penalty=0.5)
    guided = GuidedDecoding(json={"type": "object"})
    built = engine_request(gateway, request, served_model(100), [1, 2, 3], None, 4, guided=guided)
    assert isinstance(built, GenerateRequest)
    assert built.request_id == "req-7"
    assert built.token_ids == [1, 2, 3]
    assert built.stop.max_tokens == 97
    assert built.stop.min_tokens == 2
    assert built.stop.stop_token_ids == [9]
    assert built.stop.ignore_eos is False
    assert built.eos_token_ids == [2, 0]
    assert built.logprobs == 4
    assert built.model == "tiny"
    sampling = built.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed) == (0.3, 0.9, 5, 11)
    assert sampling.presence_penalty == 0.5
    assert sampling.guided is guided


def test_engine_request_ignore_eos_drops_eos_ids():
    gateway = SimpleNamespace(new_request_id=lambda: "req-8")
    built = engine_request(gateway, completion(ignore_eos=True), served_model(100), [1], 10, None)
    assert built.eos_token_ids == []
    assert built.stop.ignore_eos is True
    assert built.stop.max_tokens == 10
    assert built.logprobs is None


def test_engine_request_validates_budget():
    gateway = SimpleNamespace(new_request_id=lambda: "req-9")
    with pytest.raises(ContextLengthExceeded):
        engine_request(gateway, completion(), served_model(10), list(range(5)), 6, None)
    with pytest.raises(InvalidRequest, match="min_tokens"):
        engine_request(gateway, completion(min_tokens=8), served_model(10), list(range(5)), None, None)
