"""mistral: [TOOL_CALLS] followed by a JSON list, or name[ARGS]{json} (newer tokenizers)."""

from __future__ import annotations

from parser_support import call, chain_maker, parse_everywhere

make = chain_maker("mistral")


def test_json_list():
    text = 'Ok. [TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]'
    assert parse_everywhere(make, text) == [("content", "Ok."), call("a", x=1), call("b")]


def test_named_args_format_repeated():
    text = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[CALL_ID]abc123XYZ[ARGS]{}'
    assert parse_everywhere(make, text) == [call("get_weather", city="Paris"), call("get_time")]


def test_ids_are_nine_alphanumerics_or_the_models():
    chain = make()
    segments = chain.feed('[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b[CALL_ID]Zz9Zz9Zz9[ARGS]{}') + chain.finish()
    ids = [s.call.id for s in segments if s.call]
    assert len(ids[0]) == 9 and ids[0].isalnum() and ids[1] == "Zz9Zz9Zz9"


def test_malformed_is_content():
    for text in ["[TOOL_CALLS]nonsense", '[TOOL_CALLS][{"name": "a", "arguments": {', "x [TOOL_CALLS]"]:
        assert parse_everywhere(make, text) == [("content", text)]
