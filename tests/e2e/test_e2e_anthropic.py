"""The Anthropic Messages API (/v1/messages, /v1/messages/count_tokens) through the daemon with scripted mock
workers and the official anthropic SDK: unary, messages.stream and its accumulator, tool use, thinking,
stop sequences, count_tokens, errors in Anthropic's shape and words, cached prompt tokens in the stream's usage."""

from __future__ import annotations

import base64
import json
import re

import anthropic
import pytest
from e2e_support import MODEL
from scripted_support import HARMONY, QWEN, start_scripted_models

TOOLS = [{"name": "get_weather", "description": "Current weather of a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
         {"name": "get_time", "description": "Current time.",
          "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}]


@pytest.fixture(scope="session")
def scripted(daemon):
    start_scripted_models(daemon)


@pytest.fixture(scope="session")
def claude(daemon):
    with anthropic.Anthropic(base_url=daemon.base_url, api_key="e2e", max_retries=0, timeout=60.0) as sdk:
        yield sdk


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def blocks_view(message) -> list[tuple]:
    view = []
    for block in message.content:
        if block.type == "text":
            view.append(("text", block.text))
        elif block.type == "thinking":
            view.append(("thinking", block.thinking, block.signature))
        else:
            assert block.id.startswith("toolu_")
            view.append(("tool_use", block.name, block.input))
    return view


def message_view(message) -> dict:
    usage = message.usage
    return {"content": blocks_view(message), "stop_reason": message.stop_reason,
            "stop_sequence": message.stop_sequence, "model": message.model, "role": message.role,
            "usage": (usage.input_tokens + (usage.cache_read_input_tokens or 0), usage.output_tokens)}


def check_all_ways(claude, **kwargs):
    """Unary, the raw events and the SDK's accumulator (messages.stream) agree; returns the unary message."""
    unary = claude.messages.create(**kwargs)
    assert unary.id.startswith("msg_") and unary.type == "message"
    events = list(claude.messages.create(**kwargs, stream=True))
    check_event_order(events)
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert message_view(final) == message_view(unary)
    return unary, events


def check_event_order(events) -> None:
    kinds = [e.type for e in events]  # the SDK does not yield ping events (see test_raw_event_stream)
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    open_index = None
    for event in events[1:-2]:
        if event.type == "content_block_start":
            assert open_index is None
            open_index = event.index
        elif event.type == "content_block_delta":
            assert event.index == open_index
        else:
            assert event.type == "content_block_stop" and event.index == open_index
            open_index = None
    assert open_index is None


def test_text_with_thinking(claude, scripted):
    message, events = check_all_ways(claude, model=QWEN, max_tokens=200, messages=ask("Say hello"))
    assert blocks_view(message) == [("thinking", "A greeting.", ""), ("text", "Hello! How can I help you today?")]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    deltas = {e.delta.type for e in events if e.type == "content_block_delta"}
    assert deltas == {"thinking_delta", "text_delta"}


def test_raw_event_stream(daemon, scripted):
    body = {"model": QWEN, "max_tokens": 200, "messages": ask("Say hello"), "stream": True}
    with daemon.http.stream("POST", "/v1/messages", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    names = [line[len("event: "):] for line in lines if line.startswith("event: ")]
    data = [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]
    assert names == [item["type"] for item in data]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert data[-2]["usage"]["output_tokens"] > 0 and data[-2]["delta"]["stop_reason"] == "end_turn"


def test_tool_use_round_trip(claude, scripted):
    messages = ask("What is the weather in Paris?")
    first, events = check_all_ways(claude, model=QWEN, max_tokens=300, messages=messages, tools=TOOLS)
    assert first.stop_reason == "tool_use"
    assert blocks_view(first)[-1] == ("tool_use", "get_weather", {"city": "Paris"})
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    tool_use = first.content[-1]
    messages += [{"role": "assistant", "content": [block.model_dump() for block in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                               "content": [{"type": "text", "text": "21 C, sunny"}]}]}]
    second, _ = check_all_ways(claude, model=QWEN, max_tokens=300, messages=messages, tools=TOOLS)
    assert blocks_view(second) == [("thinking", "The tool answered.", ""),
                                   ("text", "It is 21 degrees and sunny in Paris.")]
    assert second.stop_reason == "end_turn"


@pytest.mark.parametrize("choice,calls", [
    ({"type": "auto"}, 2),
    ({"type": "any"}, 2),
    ({"type": "tool", "name": "get_weather"}, 2),
    ({"type": "auto", "disable_parallel_tool_use": True}, 1),
])
def test_tool_choice(claude, scripted, choice, calls):
    message, _ = check_all_ways(claude, model=QWEN, max_tokens=300, tools=TOOLS, tool_choice=choice,
                                messages=ask("What is the weather in Paris and the time in Tokyo?"))
    uses = [block for block in blocks_view(message) if block[0] == "tool_use"]
    assert len(uses) == calls and message.stop_reason == "tool_use"


def test_tool_choice_none_is_text(claude, scripted):
    message = claude.messages.create(model=QWEN, max_tokens=300, tools=TOOLS, tool_choice={"type": "none"},
                                     messages=ask("What is the weather in Paris?"))
    assert message.stop_reason == "end_turn" and "<tool_call>" in message.content[-1].text


def test_stop_sequence_and_max_tokens(claude, scripted):
    stopped, _ = check_all_ways(claude, model=QWEN, max_tokens=200, messages=ask("Say hello"),
                                stop_sequences=["help"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "help"
    assert blocks_view(stopped)[-1] == ("text", "Hello! How can I ")
    cut, _ = check_all_ways(claude, model=QWEN, max_tokens=3, messages=ask("Say hello"))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3


def test_thinking_settings_and_count_tokens(claude, scripted):
    base = dict(model=QWEN, messages=ask("Say hello"), system=[{"type": "text", "text": "You are terse."}])
    plain = claude.messages.count_tokens(**base).input_tokens
    disabled = claude.messages.count_tokens(**base, thinking={"type": "disabled"}).input_tokens
    assert disabled > plain  # the template closes an empty thinking block in the prompt
    message = claude.messages.create(**base, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048})
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens == plain
    assert message.content[0].type == "thinking"
    with_tools = claude.messages.count_tokens(**base, tools=TOOLS).input_tokens
    assert with_tools > plain


def test_image_and_metadata_accepted(claude, scripted):
    image = base64.b64encode(b"\x89PNG fake").decode()
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
               {"type": "text", "text": "Say hello"}]
    message = claude.messages.create(model=QWEN, max_tokens=100, messages=[{"role": "user", "content": content}],
                                     metadata={"user_id": "u-1"},
                                     extra_body={"temperature": 0.5, "top_k": 5, "output_config": {
                                         "effort": "low", "format": {"type": "json_schema",
                                                                     "schema": {"type": "object"}}}})
    assert message.content[-1].text == "Hello! How can I help you today?"


def test_harmony(claude, scripted):
    message, _ = check_all_ways(claude, model=HARMONY, max_tokens=300, tools=TOOLS[:1],
                                messages=ask("What is the weather in Paris?"))
    assert blocks_view(message) == [("thinking", "Need the weather tool.", ""),
                                    ("tool_use", "get_weather", {"city": "Paris"})]


def test_worker_error_mid_stream(claude, scripted):
    with pytest.raises(anthropic.APIStatusError) as caught:
        list(claude.messages.create(model=QWEN, max_tokens=8000, messages=ask("Write forever"), stream=True))
    assert "KV cache" in str(caught.value)


@pytest.mark.parametrize("body,status,kind", [
    ({"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, 404,
     "not_found_error"),
    ({"model": QWEN, "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error"),
    ({"model": QWEN, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 400, "invalid_request_error"),
    ({"model": QWEN, "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}],
      "thinking": {"type": "enabled", "budget_tokens": 100}}, 400, "invalid_request_error"),
    ({"model": QWEN, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, 400,
     "invalid_request_error"),
])
def test_errors_have_anthropics_shape(daemon, scripted, body, status, kind):
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    response = daemon.http.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error" and set(error["error"]) == {"type", "message"}
    assert error["error"]["type"] == kind and error["error"]["message"]


def test_sdk_raises_typed_errors(claude, scripted):
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=ask("hi"))
    assert caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.count_tokens(model=QWEN, messages=[{"role": "user", "content": [{"type": "document"}]}])


def test_context_overflow_in_anthropics_words(claude):
    """Anthropic's clients recognise an overflow by its wording; the OpenAI doors keep theirs."""
    prompt = "hello " * 12000  # about 36000 tokens: over tiny's 32768
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=MODEL, max_tokens=10, messages=ask(prompt))
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 32768 maximum", error["message"]), error
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=MODEL, max_tokens=40000, messages=ask("hi"))
    assert re.fullmatch(r"input length and `max_tokens` exceed context limit: \d+ \+ 40000 > 32768, decrease input "
                        r"length or `max_tokens` and try again", caught.value.body["error"]["message"])


def test_stream_start_and_end_report_the_same_cached_prompt_tokens(claude):
    """message_start waits for the first output, which says how much of the prompt was cached: its usage and the
    final message_delta's split the prompt the same way (input_tokens without cache_read_input_tokens)."""
    prompt = " ".join(f"cached{i}" for i in range(200))
    splits = []
    for _ in range(4):  # two workers in turn: the third and fourth requests find their prefix cached
        events = list(claude.messages.create(model=MODEL, max_tokens=3, messages=ask(prompt), stream=True))
        start = events[0].message.usage
        end = [event for event in events if event.type == "message_delta"][0].usage
        assert (start.input_tokens, start.cache_read_input_tokens) == \
            (end.input_tokens, end.cache_read_input_tokens), (start, end)
        splits.append((start.input_tokens, start.cache_read_input_tokens))
    assert len({sum(split) for split in splits}) == 1  # the same prompt length every time
    assert max(cached for _, cached in splits) > 0, splits
