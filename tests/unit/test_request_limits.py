"""What one request may hold (issue 13 items 1 and 2): the JSON nesting check before decoding, its use by every
decoder of the front doors, and ``pipeline.prepare.check_limits``."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest

from frontend.config.sections import LimitsConfig
from frontend.http.streaming import decode_request
from frontend.pipeline.guided import guided_decoding
from frontend.pipeline.prepare import check_limits
from frontend.protocol.errors import InvalidRequest
from frontend.protocol.limits import MAX_JSON_DEPTH, MAX_STOP_TOKEN_IDS, json_depth_exceeds
from frontend.protocol.openai import ChatCompletionRequest, CompletionRequest

# ---- the nesting check -----------------------------------------------------------------------------------------


def depth(value: Any) -> int:
    if isinstance(value, (list, dict)):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((depth(item) for item in items), default=0)
    return 0


LEAVES = [1, None, "", "a[{", '"]}', "\\", '\\"[', "\\\\", "é中🎉[", 2.5, True]


def random_value(rng: random.Random, budget: int) -> Any:
    if budget == 0 or rng.random() < 0.25:
        return rng.choice(LEAVES)
    if rng.random() < 0.5:
        return [random_value(rng, budget - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["k", "[", "}", '"', "\\"]) + str(i): random_value(rng, budget - 1)
            for i in range(rng.randint(0, 3))}


@pytest.mark.parametrize("seed", range(60))
def test_depth_check_agrees_with_the_decoded_depth(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        value = random_value(rng, rng.randint(0, 40))
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
            actual = depth(value)
            for limit in (0, 1, 2, 5, 10, actual - 1, actual, 40):
                if limit >= 0:
                    assert json_depth_exceeds(text.encode(), limit) == (actual > limit), (text[:200], limit)
            assert json_depth_exceeds(text) == (actual > MAX_JSON_DEPTH)  # str works too


@pytest.mark.parametrize("kind", ["[", '{"a":', '[{"b":'])
def test_very_deep_bodies_are_found(kind: str) -> None:
    closing = {"[": "]", '{"a":': "}", '[{"b":': "}]"}[kind]
    for deep in (MAX_JSON_DEPTH + 1, 10_000, 200_000):
        levels = deep // (2 if kind == '[{"b":' else 1)
        body = '{"model": "m", "x": ' + kind * levels + "1" + closing * levels + "}"
        assert json_depth_exceeds(body.encode())
    wide = json.dumps({"x": [json.loads("[" * 100 + "]" * 100)] * 2000})  # within the limit, but many brackets
    assert not json_depth_exceeds(wide.encode())
    assert json_depth_exceeds(wide.encode(), 100)


def test_brackets_in_strings_do_not_count() -> None:
    text = json.dumps({"s": "[" * 1000, "t": '\\"' + "{" * 500, "u": "\\" * 7 + '"[[['})
    assert not json_depth_exceeds(text.encode(), 1)
    assert json_depth_exceeds(text.encode(), 0)


@pytest.mark.parametrize("body", [b"[" * 500, b"]" * 500 + b"[" * 500, b'"' + b"[" * 500, b"{" * 300 + b"]" * 300,
                                  b"\\" * 999 + b"[" * 200, b"\xff[[[" * 100])
def test_not_json_gives_an_answer_without_raising(body: bytes) -> None:
    assert json_depth_exceeds(body) in (True, False)


def test_decode_request_refuses_deep_bodies_before_decoding() -> None:
    decoder = msgspec.json.Decoder(ChatCompletionRequest)
    for deep in (MAX_JSON_DEPTH + 1, 10_000):
        body = b'{"model": "m", "messages": [], "unknown": ' + b"[" * deep + b"]" * deep + b"}"
        with pytest.raises(InvalidRequest, match=f"more than {MAX_JSON_DEPTH} levels deep") as info:
            decode_request(decoder, body)
        assert info.value.status == 400
    ok = b'{"model": "m", "messages": [], "unknown": ' + b"[" * 100 + b"]" * 100 + b"}"
    assert decode_request(decoder, ok).model == "m"


def test_guided_json_as_a_deep_string_is_a_400() -> None:
    request = msgspec.convert({"model": "m", "prompt": "x", "guided_json": "[" * 5000 + "]" * 5000},
                              CompletionRequest)
    with pytest.raises(InvalidRequest, match="levels deep") as info:
        guided_decoding(request, None)
    assert info.value.param == "guided_json"


def test_model_output_nested_too_deeply_is_not_a_tool_call() -> None:
    from frontend.parsers.base import INVALID, json_arguments, loads

    deep = "[" * 100_000 + "]" * 100_000
    assert loads(deep) is INVALID
    assert json_arguments('{"a": ' + deep + "}") is None


# ---- check_limits ----------------------------------------------------------------------------------------------

LIMITS = LimitsConfig(max_stop_strings=3, max_stop_string_length=5, max_tools=2, max_tool_schema_bytes=64,
                      max_messages=4)
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields: Any) -> ChatCompletionRequest:
    return msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "x"}], **fields},
                           ChatCompletionRequest)


def refusal(request: Any, body_size: int = 10**6, names: dict[str, str] | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check_limits(request, LIMITS, body_size, names)
    assert info.value.status == 400
    return info.value


def test_within_the_limits_passes() -> None:
    check_limits(chat(stop=["a", "bb", "ccccc"], tools=[TOOL, TOOL], messages=[{"role": "user"}] * 4), LIMITS,
                 10**6)
    check_limits(msgspec.convert({"model": "m", "prompt": "x", "stop": "abcde"}, CompletionRequest), LIMITS, 10)
    check_limits(chat(), LimitsConfig(), 100)


def test_stop_strings_count_and_length() -> None:
    error = refusal(chat(stop=["a", "b", "c", "d"]))
    assert error.param == "stop" and "4 stop strings" in error.message and "at most 3" in error.message
    error = refusal(chat(stop=["a", "toolong"]))
    assert error.param == "stop[1]" and "7 characters" in error.message
    error = refusal(msgspec.convert({"model": "m", "prompt": "x", "stop": "toolong"}, CompletionRequest))
    assert error.param == "stop"
    error = refusal(chat(stop=["a", "b", "c", "d"]), names={"stop": "stop_sequences"})
    assert error.param == "stop_sequences" and error.message.startswith("stop_sequences has 4")


def test_messages_and_tools() -> None:
    error = refusal(chat(messages=[{"role": "user", "content": "x"}] * 5), names={"messages": "input"})
    assert error.param == "input" and "5 messages" in error.message
    error = refusal(chat(tools=[TOOL] * 3))
    assert error.param == "tools" and "3 tools" in error.message
    big = {"type": "function", "function": {"name": "g", "parameters": {"description": "d" * 100}}}
    error = refusal(chat(tools=[TOOL, big]))
    assert error.param == "tools[1]" and "bytes of JSON" in error.message
    check_limits(chat(tools=[TOOL, big]), LIMITS, 64)  # a body within the schema limit: nothing to measure


def test_stop_token_ids_are_bounded_by_the_wire_type() -> None:
    decoder = msgspec.json.Decoder(ChatCompletionRequest)
    body = {"model": "m", "messages": [], "stop_token_ids": [1] * (MAX_STOP_TOKEN_IDS + 1)}
    with pytest.raises(InvalidRequest) as info:
        decode_request(decoder, json.dumps(body).encode())
    assert info.value.param == "stop_token_ids"
    body["stop_token_ids"] = [1] * MAX_STOP_TOKEN_IDS
    assert len(decode_request(decoder, json.dumps(body).encode()).stop_token_ids) == MAX_STOP_TOKEN_IDS
