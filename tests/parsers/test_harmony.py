"""harmony / gpt_oss: gpt-oss channels (analysis = reasoning, final = content, to=functions.X = call)."""

from __future__ import annotations

from parser_support import call, chain_maker, parse_everywhere

ANALYSIS = "<|channel|>analysis<|message|>Need weather.<|end|>"
CALL = ('<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
        '{"city":"Paris"}<|call|>')
FINAL = "<|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>"


def test_reasoning_and_final():
    make = chain_maker("", "gpt_oss")
    assert parse_everywhere(make, ANALYSIS + FINAL) == [("reasoning", "Need weather."), ("content", "It is sunny.")]


def test_tool_call_with_reasoning():
    make = chain_maker("harmony", "gpt_oss")
    assert parse_everywhere(make, ANALYSIS + CALL) == [("reasoning", "Need weather."),
                                                       call("get_weather", city="Paris")]


def test_recipient_in_the_role_header_and_parallel_calls():
    make = chain_maker("harmony", "gpt_oss")
    second = '<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{}<|call|>'
    assert parse_everywhere(make, CALL + second) == [call("get_weather", city="Paris"), call("get_time")]


def test_without_tools_calls_are_content():
    make = chain_maker("", "gpt_oss")
    assert parse_everywhere(make, ANALYSIS + CALL) == [("reasoning", "Need weather."), ("content", '{"city":"Paris"}')]


def test_without_reasoning_parser_analysis_is_content():
    make = chain_maker("harmony")
    assert parse_everywhere(make, ANALYSIS + FINAL) == [("content", "Need weather.It is sunny.")]


def test_plain_output_is_content():
    make = chain_maker("harmony", "gpt_oss")
    assert parse_everywhere(make, "Just text, <|no header.") == [("content", "Just text, <|no header.")]


def test_malformed_arguments_are_content_and_cut_header_dropped():
    make = chain_maker("harmony", "gpt_oss")
    text = '<|channel|>commentary to=functions.f<|message|>{bad<|call|><|start|>assistant<|channel|>fin'
    assert parse_everywhere(make, text) == [("content", "{bad")]
