"""pythonic: [f(a=1), g(b="x")] (Llama 3.2 / Llama 4)."""

from __future__ import annotations

import pytest
from parser_support import call, chain_maker, parse_everywhere

make = chain_maker("pythonic")


def test_parallel_calls_with_literals():
    text = '[get_weather(city="Paris", days=3), get_time(tz=\'UTC\', opts={"a": [1, None, True]})]'
    assert parse_everywhere(make, text) == [call("get_weather", city="Paris", days=3),
                                            call("get_time", tz="UTC", opts={"a": [1, None, True]})]


def test_python_start_tags_and_text_after():
    text = 'Sure.<|python_start|>[f(x="a]b")]<|python_end|> Done.'
    assert parse_everywhere(make, text) == [("content", "Sure."), call("f", x="a]b"), ("content", "Done.")]


def test_text_after_list():
    assert parse_everywhere(make, "[f()] that was it") == [call("f"), ("content", "that was it")]


@pytest.mark.parametrize("text", [
    "[1, 2, 3]", "[f(1)]", "[f(x=open('a'))]", "[f(**k)]", "[f(x=1)", "[]", "[f(x={1, 2})]",
    "see [f(x=1)] here",
])
def test_not_calls_are_content(text):
    assert parse_everywhere(make, text) == [("content", text)]
