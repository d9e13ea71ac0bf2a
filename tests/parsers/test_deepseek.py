"""deepseek_v3: <｜tool▁calls▁begin｜> sections (V3 fenced form and V3.1 short form)."""

from __future__ import annotations

from parser_support import call, chain_maker, parse_everywhere

from frontend.parsers.deepseek import CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, SEP

make = chain_maker("deepseek_v3", "deepseek_r1")


def v3(name: str, arguments: str) -> str:
    return f"{CALL_BEGIN}function{SEP}{name}\n```json\n{arguments}\n```{CALL_END}"


def test_reasoning_then_parallel_calls():
    text = ("I need two tools.</think>\n\nCalling." + CALLS_BEGIN + v3("a", '{"x": 1}') + "\n"
            + v3("b", "{}") + CALLS_END)
    assert parse_everywhere(make, text) == [("reasoning", "I need two tools."), ("content", "Calling."),
                                            call("a", x=1), call("b")]


def test_v31_form():
    text = CALLS_BEGIN + f'{CALL_BEGIN}get_weather{SEP}{{"city": "Oslo"}}{CALL_END}' + CALLS_END
    assert parse_everywhere(chain_maker("deepseek_v3"), text) == [call("get_weather", city="Oslo")]


def test_malformed_section_is_content():
    text = "x" + CALLS_BEGIN + v3("a", "{broken") + CALLS_END
    assert parse_everywhere(chain_maker("deepseek_v3"), text) == [("content", text)]
