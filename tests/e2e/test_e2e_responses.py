"""The Responses API (/v1/responses) through the daemon with scripted mock workers and the official openai
SDK: unary, raw stream events, the SDK's stream helper, function calls, previous_response_id, GET/DELETE."""

from __future__ import annotations

import json

import openai
import pytest
from scripted_support import HARMONY, QWEN, start_scripted_models

TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather of a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="session")
def scripted(daemon):
    start_scripted_models(daemon)


def output_view(response) -> list[tuple]:
    """The output items without ids."""
    view = []
    for item in response.output:
        if item.type == "message":
            view.append(("message", item.status, [(p.type, p.text) for p in item.content]))
        elif item.type == "reasoning":
            view.append(("reasoning", [(p.type, p.text) for p in item.content or []]))
        else:
            view.append(("function_call", item.name, json.loads(item.arguments), item.status))
    return view


def response_view(response) -> dict:
    usage = response.usage
    return {"status": response.status, "output": output_view(response), "model": response.model,
            "incomplete": response.incomplete_details and response.incomplete_details.reason,
            "usage": (usage.input_tokens, usage.output_tokens, usage.total_tokens,
                      usage.output_tokens_details.reasoning_tokens)}


def check_all_ways(client, **kwargs):
    """Unary, the raw event stream and the SDK's stream helper give the same response; returns the unary one."""
    unary = client.responses.create(**kwargs)
    events = list(client.responses.create(**kwargs, stream=True))
    check_event_order(events)
    assert response_view(events[-1].response) == response_view(unary)
    if unary.status == "completed":  # the helper's final response needs response.completed (as with OpenAI)
        with client.responses.stream(**kwargs) as stream:
            final = stream.get_final_response()
        assert response_view(final) == response_view(unary)
    return unary, events


def check_event_order(events) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    open_items: dict[int, str] = {}
    for event in events[2:-1]:
        if event.type == "response.output_item.added":
            assert event.output_index not in open_items
            open_items[event.output_index] = event.item.type
        elif event.type == "response.output_item.done":
            assert open_items.pop(event.output_index) == event.item.type
        else:
            assert event.output_index in open_items, event
    assert not open_items


def test_text_with_reasoning(client, scripted):
    response, events = check_all_ways(client, model=QWEN, input="Say hello")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.output_text == "Hello! How can I help you today?"
    assert output_view(response) == [("reasoning", [("reasoning_text", "A greeting.")]),
                                     ("message", "completed", [("output_text", "Hello! How can I help you today?")])]
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    kinds = [e.type for e in events]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added",
                     *["response.reasoning_text.delta"] * kinds.count("response.reasoning_text.delta"),
                     "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
                     "response.output_item.added", "response.content_part.added",
                     *["response.output_text.delta"] * kinds.count("response.output_text.delta"),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text


def test_function_call_round_trip_with_previous_response_id(client, scripted):
    first, events = check_all_ways(client, model=QWEN, input="What is the weather in Paris?", tools=TOOLS)
    call = first.output[-1]
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Paris"})
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    deltas = [e for e in events if e.type.startswith("response.function_call_arguments")]
    assert [e.type for e in deltas] == ["response.function_call_arguments.delta",
                                        "response.function_call_arguments.done"]
    result = [{"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 21})}]
    second, _ = check_all_ways(client, model=QWEN, previous_response_id=first.id, input=result, tools=TOOLS)
    assert second.output_text == "It is 21 degrees and sunny in Paris."
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens


def test_stateless_round_trip_with_items(client, scripted):
    items = [{"role": "user", "content": [{"type": "input_text", "text": "What is the weather in Paris?"}]},
             {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Call it."}]},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "21 C"}]
    response = client.responses.create(model=QWEN, input=items, tools=TOOLS, store=False,
                                       instructions="Be brief.")
    assert response.output_text == "It is 21 degrees and sunny in Paris."
    assert response.store is False and response.instructions == "Be brief."
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_retrieve_and_delete(client, scripted):
    created = client.responses.create(model=QWEN, input="Say hello", metadata={"k": "v"})
    assert created.store is True
    fetched = client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_incomplete_at_max_output_tokens(client, scripted):
    response, _ = check_all_ways(client, model=QWEN, input="Say hello", max_output_tokens=4)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].status in ("incomplete", None)


def test_harmony_function_call(client, scripted):
    response, _ = check_all_ways(client, model=HARMONY, input="What is the weather in Paris?", tools=TOOLS)
    assert output_view(response) == [("reasoning", [("reasoning_text", "Need the weather tool.")]),
                                     ("function_call", "get_weather", {"city": "Paris"}, "completed")]


def test_echoed_settings(client, scripted):
    text = {"format": {"type": "json_schema", "name": "answer", "strict": True,
                       "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    response = client.responses.create(model=QWEN, input="Say hello", temperature=0.5, top_p=0.9, text=text,
                                       tool_choice="none", tools=TOOLS, parallel_tool_calls=False)
    assert (response.temperature, response.top_p, response.tool_choice, response.parallel_tool_calls) == \
        (0.5, 0.9, "none", False)
    assert response.text.format.type == "json_schema" and response.tools[0].name == "get_weather"


def test_worker_error_mid_stream_is_response_failed(client, scripted):
    events = list(client.responses.create(model=QWEN, input="Write forever", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed" and "KV cache" in events[-1].response.error.message


@pytest.mark.parametrize("kwargs,param", [
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": "hi", "previous_response_id": "resp_unknown"}, "previous_response_id"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "tool_choice": {"type": "function", "name": "nope"}, "tools": TOOLS}, "tool_choice"),
])
def test_invalid_requests_are_400(client, scripted, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=QWEN, **kwargs)
    assert caught.value.body["param"] == param
