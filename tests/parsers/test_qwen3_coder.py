"""qwen3_coder: XML <function=...><parameter=...> calls, values typed by the tool schema."""

from __future__ import annotations

from parser_support import call, chain_maker, parse_everywhere

TOOLS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
    "hours": {"type": "array"}, "extra": {"type": "object"}, "ratio": {"type": "number"}}}}]
make = chain_maker("qwen3_coder", tools=TOOLS)

CALL = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nSan Francisco\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n"
        "<parameter=hours>\n[1, 2]\n</parameter>\n<parameter=extra>\n{'a': 1}\n</parameter>\n"
        "<parameter=ratio>\n0.5\n</parameter>\n</function>\n</tool_call>")


def test_typed_parameters():
    assert parse_everywhere(make, "Checking.\n" + CALL) == [
        ("content", "Checking."),
        call("get_weather", city="San Francisco", days=3, metric=True, hours=[1, 2], extra={"a": 1}, ratio=0.5)]


def test_parallel_and_bare_function():
    text = ("<tool_call>\n<function=a>\n<parameter=x>\n1\n</parameter>\n</function>\n</tool_call>\n"
            "<function=b>\n<parameter=y>\nmulti\nline\n</parameter>\n</function>")
    assert parse_everywhere(make, text) == [call("a", x="1"), call("b", y="multi\nline")]


def test_unknown_schema_keeps_strings_and_bad_values():
    text = "<tool_call><function=get_weather><parameter=days>many</parameter></function></tool_call>"
    assert parse_everywhere(make, text) == [call("get_weather", days="many")]


def test_unclosed_function_at_the_end_is_a_call():
    text = "<tool_call>\n<function=a>\n<parameter=x>\nv\n"
    assert parse_everywhere(make, text) == [call("a", x="v")]


def test_block_without_function_is_content():
    text = "A <tool_call>nothing here</tool_call> B"
    assert parse_everywhere(make, text) == [("content", text)]


def test_no_parameters():
    assert parse_everywhere(make, "<tool_call><function=now></function></tool_call>") == [call("now")]
