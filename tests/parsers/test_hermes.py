"""hermes: <tool_call>{json}</tool_call> blocks (Qwen2.5 / Qwen3)."""

from __future__ import annotations

import pytest
from parser_support import call, chain_maker, parse_everywhere

make = chain_maker("hermes")

WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TIME = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>'


def test_single_call_with_text_before():
    assert parse_everywhere(make, "Let me check.\n\n" + WEATHER) == [
        ("content", "Let me check."), call("get_weather", city="Paris")]


def test_parallel_calls_and_text_after():
    text = WEATHER + "\n" + TIME + "\nDone."
    assert parse_everywhere(make, text) == [
        call("get_weather", city="Paris"), call("get_time", tz="UTC"), ("content", "Done.")]


def test_plain_text_is_unchanged():
    text = "No tools needed.\nJust text < with > brackets and <tool maybe.\n"
    assert parse_everywhere(make, text) == [("content", text)]


def test_partial_marker_at_the_end_is_content():
    assert parse_everywhere(make, "Hello <tool_ca") == [("content", "Hello <tool_ca")]


@pytest.mark.parametrize("block", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par</tool_call>',
    '<tool_call>not json at all</tool_call>',
    '<tool_call>{"arguments": {}}</tool_call>',
    '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>',
])
def test_malformed_block_is_content(block):
    assert parse_everywhere(make, "Before " + block + " after") == [("content", "Before " + block + " after")]


def test_unclosed_but_complete_json_is_a_call():
    assert parse_everywhere(make, '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n') == [call("f", a=1)]


def test_unclosed_incomplete_json_is_content():
    text = 'Hi <tool_call>{"name": "f", "argum'
    assert parse_everywhere(make, text) == [("content", text)]


def test_string_arguments_and_parameters_key():
    text = ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'
            '<tool_call>{"name": "g", "parameters": {"b": "é"}}</tool_call>')
    assert parse_everywhere(make, text) == [call("f", a=1), call("g", b="é")]


def test_missing_arguments_are_empty_object():
    assert parse_everywhere(make, '<tool_call>{"name": "now"}</tool_call>') == [call("now")]


def test_parallel_tool_calls_false_keeps_the_first():
    single = chain_maker("hermes", parallel=False)
    assert parse_everywhere(single, WEATHER + TIME) == [call("get_weather", city="Paris")]


def test_reasoning_then_tool_call():
    both = chain_maker("hermes", "qwen3")
    text = "<think>\nI should call the tool.\n</think>\n\n" + WEATHER
    assert parse_everywhere(both, text) == [("reasoning", "I should call the tool."),
                                            call("get_weather", city="Paris")]


def test_tool_marker_inside_reasoning_is_reasoning():
    both = chain_maker("hermes", "qwen3")
    text = "<think>maybe <tool_call> here</think>Answer"
    assert parse_everywhere(both, text) == [("reasoning", "maybe <tool_call> here"), ("content", "Answer")]


def test_ids_are_unique():
    chain = make()
    segments = chain.feed(WEATHER + TIME) + chain.finish()
    ids = [s.call.id for s in segments if s.call]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    assert chain.tool_calls == 2
