"""llama3_json: the output is JSON calls (optionally after <|python_tag|>), separated by ';'."""

from __future__ import annotations

from parser_support import call, chain_maker, parse_everywhere

make = chain_maker("llama3_json")


def test_single_call():
    assert parse_everywhere(make, '{"name": "get_weather", "parameters": {"city": "Paris"}}') == [
        call("get_weather", city="Paris")]


def test_multiple_calls_and_trailing_text():
    text = ' {"name": "a", "parameters": {"x": 1}}; {"name": "b", "arguments": {}} and more'
    assert parse_everywhere(make, text) == [call("a", x=1), call("b"), ("content", "and more")]


def test_python_tag_after_text():
    text = 'Sure.<|python_tag|>{"name": "a", "parameters": {}}'
    assert parse_everywhere(make, text) == [("content", "Sure."), call("a")]


def test_json_inside_prose_is_content():
    text = 'Use {"name": "a", "parameters": {}} like this.'
    assert parse_everywhere(make, text) == [("content", text)]


def test_json_that_is_not_a_call_is_content():
    for text in ['{"answer": 42}', '{"name": "a", "parameters": ', "{oops"]:
        assert parse_everywhere(make, text) == [("content", text)]
