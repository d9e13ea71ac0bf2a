"""tool_choice required / named: guided JSON first, then the model's own markup, then content."""

from __future__ import annotations

from parser_support import call, chain_maker, parse_everywhere

from frontend.parsers.forced import forced_response_format

TOOLS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
         {"name": "get_time"}]


def test_named_function_guided_json():
    make = chain_maker("hermes", forced=True, function="get_weather", tools=TOOLS)
    assert parse_everywhere(make, '{"city": "Paris"}') == [call("get_weather", city="Paris")]


def test_required_guided_json_list():
    make = chain_maker("", forced=True, tools=TOOLS)
    text = '[{"name": "get_weather", "parameters": {"city": "Rome"}}, {"name": "get_time", "parameters": {}}]'
    assert parse_everywhere(make, text) == [call("get_weather", city="Rome"), call("get_time")]


def test_markup_falls_back_to_the_models_parser():
    make = chain_maker("hermes", forced=True, tools=TOOLS)
    text = 'Sure <tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert parse_everywhere(make, text) == [("content", "Sure"), call("get_time")]


def test_neither_is_content():
    make = chain_maker("", forced=True, function="get_weather", tools=TOOLS)
    assert parse_everywhere(make, "no call") == [("content", "no call")]


def test_schemas():
    named = forced_response_format(TOOLS, "get_weather", True)
    assert named["json_schema"]["schema"] == TOOLS[0]["parameters"]
    required = forced_response_format(TOOLS, None, False)["json_schema"]["schema"]
    assert required["maxItems"] == 1 and len(required["items"]["anyOf"]) == 2
    assert required["items"]["anyOf"][1]["properties"]["parameters"] == {"type": "object"}
