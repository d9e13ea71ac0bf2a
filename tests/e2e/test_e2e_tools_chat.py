"""Tool calling and reasoning on /v1/chat/completions through the daemon, with scripted mock workers and the
official openai SDK: unary, streamed, the SDK's stream accumulator, a two-round tool loop, tool_choice."""

from __future__ import annotations

import json

import openai
import pytest
from scripted_support import HARMONY, LONG_REASONING, QWEN, TOOLS, WEATHER_TOOL, start_scripted_models


@pytest.fixture(scope="session")
def scripted(daemon):
    start_scripted_models(daemon)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def message_view(message) -> dict:
    """What a client sees of an assistant message, without the random call ids."""
    calls = [(c.type, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    return {"content": message.content, "reasoning": getattr(message, "reasoning_content", None), "calls": calls}


def stream_view(chunks) -> tuple[dict, str]:
    """Reassemble streamed chunks by hand (as a client without the SDK helper would), checking call deltas."""
    content, reasoning, calls, finish = "", "", {}, None
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
            for call in delta.tool_calls or []:
                if call.index not in calls:
                    assert call.id and call.type == "function" and call.function.name, call
                    calls[call.index] = {"name": call.function.name, "arguments": call.function.arguments or ""}
                else:
                    assert call.id is None and call.function.name is None, call
                    calls[call.index]["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    views = [("function", c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    return {"content": content or None, "reasoning": reasoning or None, "calls": views}, finish


def check_all_ways(client, **kwargs) -> tuple[dict, str]:
    """Unary, hand-reassembled stream and the SDK's stream accumulator agree; returns (view, finish_reason)."""
    unary = client.chat.completions.create(**kwargs)
    view = message_view(unary.choices[0].message)
    streamed, finish = stream_view(client.chat.completions.create(**kwargs, stream=True))
    if view["content"] is None:
        assert streamed["content"] is None
    assert streamed == view
    assert finish == unary.choices[0].finish_reason
    with client.chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    assert message_view(final.choices[0].message) == view
    assert final.choices[0].finish_reason == finish
    return view, finish


def test_tool_call_with_reasoning(client, scripted):
    view, finish = check_all_ways(client, model=QWEN, messages=ask("What is the weather in Paris?"), tools=TOOLS)
    assert finish == "tool_calls"
    assert view == {"content": None, "reasoning": "I should call the weather tool.",
                    "calls": [("function", "get_weather", {"city": "Paris"})]}


def test_parallel_tool_calls_with_text(client, scripted):
    messages = ask("What is the weather in Paris and the time in Tokyo?")
    view, finish = check_all_ways(client, model=QWEN, messages=messages, tools=TOOLS)
    assert finish == "tool_calls"
    assert view["content"] == "Checking both."
    assert view["calls"] == [("function", "get_weather", {"city": "Paris"}),
                             ("function", "get_time", {"tz": "Asia/Tokyo"})]
    single, _ = check_all_ways(client, model=QWEN, messages=messages, tools=TOOLS, parallel_tool_calls=False)
    assert single["calls"] == view["calls"][:1]


def test_two_round_tool_loop(client, scripted):
    messages = ask("What is the weather in Paris?")
    first = client.chat.completions.create(model=QWEN, messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21})}]
    view, finish = check_all_ways(client, model=QWEN, messages=messages, tools=TOOLS)
    assert finish == "stop"
    assert view == {"content": "It is 21 degrees and sunny in Paris.", "reasoning": "The tool answered.",
                    "calls": []}


def test_reasoning_and_thinking_budget(client, scripted):
    view, finish = check_all_ways(client, model=QWEN, messages=ask("Think hard about it."))
    assert view == {"content": "The answer is 42.", "reasoning": LONG_REASONING, "calls": []}
    assert finish == "stop"
    budget, _ = check_all_ways(client, model=QWEN, messages=ask("Think hard about it."),
                               extra_body={"nvext": {"max_thinking_tokens": 6}})
    assert budget["content"] == "The answer is 42."
    assert LONG_REASONING.startswith(budget["reasoning"]) and len(budget["reasoning"]) < len(LONG_REASONING) // 3


def test_malformed_tool_call_is_content(client, scripted):
    view, finish = check_all_ways(client, model=QWEN, messages=ask("Use the broken tool."), tools=TOOLS)
    assert finish == "stop"
    assert view["calls"] == [] and view["content"].startswith("Here: <tool_call>{")


def test_tool_choice_none_leaves_tools_out(client, scripted):
    with_tools = client.chat.completions.create(model=QWEN, messages=ask("What is the weather in Paris?"),
                                                tools=TOOLS)
    none = client.chat.completions.create(model=QWEN, messages=ask("What is the weather in Paris?"), tools=TOOLS,
                                          tool_choice="none")
    assert none.usage.prompt_tokens < with_tools.usage.prompt_tokens
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].finish_reason == "stop"
    assert "<tool_call>" in none.choices[0].message.content  # not parsed: the model was offered no tools


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_choice(client, scripted, choice):
    view, finish = check_all_ways(client, model=QWEN, messages=ask("What is the weather in Paris?"), tools=TOOLS,
                                  tool_choice=choice)
    assert finish == "tool_calls"
    assert view["calls"] == [("function", "get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("kwargs,param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function"),
])
def test_invalid_tool_fields_are_400(client, scripted, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=QWEN, messages=ask("hi"), **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.body["param"].startswith(param)


def test_harmony_channels(client, scripted):
    messages = ask("What is the weather in Paris?")
    view, finish = check_all_ways(client, model=HARMONY, messages=messages, tools=[WEATHER_TOOL])
    assert finish == "tool_calls"
    assert view == {"content": None, "reasoning": "Need the weather tool.",
                    "calls": [("function", "get_weather", {"city": "Paris"})]}
    plain, finish = check_all_ways(client, model=HARMONY, messages=ask("Hello"))
    assert plain == {"content": "Hi there.", "reasoning": "Simple question.", "calls": []} and finish == "stop"


def test_plain_model_has_no_reasoning_field(client):
    response = client.chat.completions.create(model="tiny", messages=ask("Hello"), max_tokens=5, tools=TOOLS)
    message = response.choices[0].message
    assert message.tool_calls is None and getattr(message, "reasoning_content", None) is None


def test_logprobs_with_parsed_output(client, scripted):
    kwargs = dict(model=QWEN, messages=ask("Say hello"), logprobs=True, top_logprobs=2)
    unary = client.chat.completions.create(**kwargs)
    assert len(unary.choices[0].logprobs.content) == unary.usage.completion_tokens
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    streamed = [entry for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                for entry in chunk.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in unary.choices[0].logprobs.content]
