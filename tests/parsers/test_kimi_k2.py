"""kimi_k2: <|tool_calls_section_begin|> with functions.NAME:IDX ids."""

from __future__ import annotations

from parser_support import call, chain_maker, parse_everywhere

make = chain_maker("kimi_k2")

SECTION = ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
           '{"city": "Paris"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1'
           "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>")


def test_parallel_calls_keep_model_ids():
    assert parse_everywhere(make, "Let me look." + SECTION) == [
        ("content", "Let me look."), call("get_weather", city="Paris"), call("get_time")]
    chain = make()
    ids = [s.call.id for s in chain.feed(SECTION) + chain.finish() if s.call]
    assert ids == ["functions.get_weather:0", "functions.get_time:1"]


def test_malformed_is_content():
    text = "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{x"
    assert parse_everywhere(make, text) == [("content", text)]
