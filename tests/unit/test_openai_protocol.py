"""Unit tests for frontend.protocol.openai: decoding and validating OpenAI request bodies."""

from __future__ import annotations

import json

import msgspec
import pytest

from frontend.protocol.openai import (
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorDetail,
    ErrorResponse,
    ImagePart,
    NvExt,
    TextPart,
    Tool,
    Usage,
)


def chat(**fields) -> ChatCompletionRequest:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.decode(json.dumps(body), type=ChatCompletionRequest)


def completion(**fields) -> CompletionRequest:
    body = {"model": "tiny", "prompt": "hi", **fields}
    return msgspec.json.decode(json.dumps(body), type=CompletionRequest)


# ---- chat: messages --------------------------------------------------------------------------------


def test_minimal_chat_defaults():
    request = chat()
    assert request.model == "tiny"
    assert request.messages == [ChatMessage(role="user", content="hi")]
    assert request.stream is False
    assert request.n == 1
    assert request.max_tokens is None and request.max_completion_tokens is None
    assert request.temperature is None and request.top_p is None
    assert request.stop is None
    assert request.tools is None
    assert request.logprobs is False
    assert request.add_generation_prompt is True
    assert request.skip_special_tokens is True
    assert request.ignore_eos is False


def test_string_and_content_part_messages():
    request = chat(messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "developer", "content": "dev"},
    ])
    system, user, assistant, tool, developer = request.messages
    assert system.content == "be brief"
    assert isinstance(user.content, list)
    text, image, audio = user.content
    assert text == TextPart(text="what is this?")
    assert isinstance(image, ImagePart)
    assert image.image_url.url.startswith("data:image/png") and image.image_url.detail == "low"
    assert audio.input_audio.format == "wav"
    assert assistant.content is None
    assert assistant.tool_calls[0].function.name == "f"
    assert json.loads(assistant.tool_calls[0].function.arguments) == {"x": 1}
    assert assistant.tool_calls[0].type == "function"
    assert tool.tool_call_id == "call_1"
    assert developer.role == "developer"


def test_message_without_content():
    request = chat(messages=[{"role": "assistant"}])
    assert request.messages[0].content is None


@pytest.mark.parametrize("messages", [
    [{"role": "robot", "content": "hi"}],  # unknown role
    [{"content": "hi"}],  # missing role
    [{"role": "user", "content": [{"type": "video", "url": "x"}]}],  # unknown content part
    [{"role": "user", "content": [{"type": "text"}]}],  # text part without text
    [{"role": "user", "content": 5}],
    "hello",
])
def test_invalid_messages_rejected(messages):
    with pytest.raises(msgspec.ValidationError):
        chat(messages=messages)


def test_missing_messages_rejected():
    with pytest.raises(msgspec.ValidationError, match="messages"):
        msgspec.json.decode(b'{"model": "tiny"}', type=ChatCompletionRequest)


def test_missing_model_rejected():
    with pytest.raises(msgspec.ValidationError, match="model"):
        msgspec.json.decode(b'{"messages": []}', type=ChatCompletionRequest)


def test_malformed_json_is_decode_error():
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(b'{"model": "tiny", ', type=ChatCompletionRequest)


# ---- chat: tools -----------------------------------------------------------------------------------


def test_tools_and_tool_choice():
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = chat(
        tools=[{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                                 "parameters": parameters, "strict": True}},
               {"function": {"name": "no_params"}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    weather, bare = request.tools
    assert isinstance(weather, Tool)
    assert weather.type == "function"
    assert weather.function.name == "get_weather"
    assert weather.function.parameters == parameters
    assert weather.function.strict is True
    assert bare.type == "function" and bare.function.parameters is None
    assert request.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert request.parallel_tool_calls is False


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_string(choice):
    assert chat(tool_choice=choice).tool_choice == choice


def test_tool_of_unknown_type_rejected():
    with pytest.raises(msgspec.ValidationError):
        chat(tools=[{"type": "code_interpreter", "function": {"name": "f"}}])


# ---- unknown fields, stop, ranges ------------------------------------------------------------------


def test_unknown_fields_ignored():
    request = chat(frobnicate=True, metadata={"a": 1}, service_tier="flex",
                   messages=[{"role": "user", "content": "hi", "extra": [1, 2]}])
    assert request.messages[0].content == "hi"
    assert not hasattr(request, "frobnicate")


def test_stop_as_string_or_list():
    assert chat(stop="\n").stop == "\n"
    assert chat(stop=["a", "bb"]).stop == ["a", "bb"]
    assert chat(stop=None).stop is None
    assert completion(stop="END").stop == "END"
    with pytest.raises(msgspec.ValidationError):
        chat(stop=5)
    with pytest.raises(msgspec.ValidationError):
        chat(stop=["a", 1])


@pytest.mark.parametrize("field, value", [
    ("temperature", 0.0), ("temperature", 2.0), ("temperature", 1), ("top_p", 0.0), ("top_p", 1.0),
    ("top_k", -1), ("min_p", 0.5), ("presence_penalty", -2.0), ("frequency_penalty", 2.0),
    ("repetition_penalty", 1.1), ("top_logprobs", 20), ("max_tokens", 1), ("min_tokens", 0), ("n", 1),
])
def test_in_range_values_accepted(field, value):
    assert getattr(chat(**{field: value}), field) == value


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("temperature", 2.01), ("top_p", -0.01), ("top_p", 1.5), ("top_k", -2),
    ("min_p", 1.1), ("presence_penalty", -2.5), ("frequency_penalty", 3), ("repetition_penalty", 0),
    ("top_logprobs", 21), ("top_logprobs", -1), ("max_tokens", 0), ("max_completion_tokens", 0),
    ("min_tokens", -1), ("n", 0), ("stop_token_ids", [-1]), ("temperature", "hot"), ("stream", "yes"),
])
def test_out_of_range_values_rejected_naming_field(field, value):
    with pytest.raises(msgspec.ValidationError) as info:
        chat(**{field: value})
    assert field in str(info.value)


def test_completion_ranges():
    assert completion(logprobs=5).logprobs == 5
    with pytest.raises(msgspec.ValidationError, match="logprobs"):
        completion(logprobs=21)
    with pytest.raises(msgspec.ValidationError, match="temperature"):
        completion(temperature=5)
    with pytest.raises(msgspec.ValidationError, match="best_of"):
        completion(best_of=0)


def test_stream_options():
    request = chat(stream=True, stream_options={"include_usage": True})
    assert request.stream is True
    assert request.stream_options.include_usage is True
    assert request.stream_options.continuous_usage_stats is False


# ---- completions: prompt forms ---------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [
    "Once upon a time",
    "",
    ["first", "second"],
    [1, 2, 3],
    [[1, 2], [3]],
    [],
])
def test_completion_prompt_forms(prompt):
    assert completion(prompt=prompt).prompt == prompt


def test_completion_mixed_prompt_decodes():
    # Mixed lists are accepted by the type and rejected later by the handler (see test_generation).
    assert completion(prompt=["a", 1]).prompt == ["a", 1]


@pytest.mark.parametrize("prompt", [
    None,
    5,
    [-1],
    [[1, -2]],
    [1.5],
    [[["deep"]]],
    {"text": "hi"},
])
def test_invalid_completion_prompt_rejected(prompt):
    with pytest.raises(msgspec.ValidationError, match="prompt"):
        completion(prompt=prompt)


def test_completion_missing_prompt_rejected():
    with pytest.raises(msgspec.ValidationError, match="prompt"):
        msgspec.json.decode(b'{"model": "tiny"}', type=CompletionRequest)


def test_completion_fields():
    request = completion(echo=True, suffix="!", best_of=1, logprobs=0, max_tokens=7, seed=3, ignore_eos=True,
                         min_tokens=2, stop_token_ids=[0, 2], nvext={"x": 1, "greed_sampling": True})
    assert (request.echo, request.suffix, request.best_of, request.logprobs) == (True, "!", 1, 0)
    assert (request.max_tokens, request.seed, request.ignore_eos, request.min_tokens) == (7, 3, True, 2)
    assert request.stop_token_ids == [0, 2]
    assert request.nvext == NvExt(greed_sampling=True)  # unknown nvext fields are ignored


# ---- responses encode as OpenAI JSON ---------------------------------------------------------------


def test_completion_response_encoding():
    body = Completion("cmpl-1", 123, "tiny", [CompletionChoice(0, "text", "stop")], Usage(3, 1, 4))
    decoded = json.loads(msgspec.json.encode(body))
    assert decoded["object"] == "text_completion"
    assert decoded["choices"][0] == {"index": 0, "text": "text", "finish_reason": "stop", "logprobs": None}
    assert decoded["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                                "prompt_tokens_details": None}


def test_error_response_encoding():
    body = ErrorResponse(ErrorDetail("bad", "invalid_request_error", "n", None))
    assert json.loads(msgspec.json.encode(body)) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": None}}
