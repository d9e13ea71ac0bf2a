"""Structured-output validation (frontend.pipeline.guided): at most one constraint, valid schemas and regexes, what a
forced tool call may be combined with, 400s that name the field (as the front door calls it)."""

from __future__ import annotations

import json

import msgspec
import pytest

from frontend.pipeline.guided import SCHEMA_FIELD, check_forced_call, check_schema, guided_decoding
from frontend.pipeline.nvext import as_nvext
from frontend.protocol.engine import GuidedDecoding
from frontend.protocol.errors import InvalidRequest
from frontend.protocol.openai import ChatCompletionRequest, CompletionRequest

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name"]}


def chat(**fields) -> ChatCompletionRequest:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.decode(json.dumps(body), type=ChatCompletionRequest)


def guided(**fields) -> GuidedDecoding | None:
    request = chat(**fields)
    return guided_decoding(request, as_nvext(request.nvext))


def rejected(**fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        guided(**fields)
    assert info.value.status == 400
    return info.value


def test_no_constraint():
    assert guided() is None
    assert guided(response_format={"type": "text"}) is None


def test_json_object():
    assert guided(response_format={"type": "json_object"}) == GuidedDecoding(json={"type": "object"})


def test_json_schema_and_guided_json_forms():
    expected = GuidedDecoding(json=SCHEMA)
    assert guided(response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}) == expected
    assert guided(guided_json=SCHEMA) == expected
    assert guided(guided_json=json.dumps(SCHEMA)) == expected  # vLLM also takes the schema as a JSON string


def test_regex_choice_grammar_and_pass_through_fields():
    assert guided(guided_regex=r"\d{3}-\d{4}") == GuidedDecoding(regex=r"\d{3}-\d{4}")
    assert guided(guided_choice=["yes", "no"]) == GuidedDecoding(choice=["yes", "no"])
    assert guided(guided_grammar="root ::= \"a\"") == GuidedDecoding(grammar="root ::= \"a\"")
    both = guided(guided_choice=["a"], guided_decoding_backend="xgrammar", guided_whitespace_pattern=r"[ ]?")
    assert (both.backend, both.whitespace_pattern) == ("xgrammar", r"[ ]?")


def test_deprecated_nvext_copies_apply_only_without_a_root_constraint():
    assert guided(nvext={"guided_choice": ["left", "right"]}) == GuidedDecoding(choice=["left", "right"])
    assert guided(guided_regex="a+", nvext={"guided_choice": ["x"]}) == GuidedDecoding(regex="a+")
    assert rejected(nvext={"guided_regex": "("}).param == "nvext.guided_regex"


@pytest.mark.parametrize("fields, param", [
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
    ({"response_format": {"type": "json_object"}, "guided_json": SCHEMA}, "guided_json"),
    ({"guided_json": SCHEMA, "guided_grammar": "g"}, "guided_grammar"),
])
def test_more_than_one_constraint(fields, param):
    error = rejected(**fields)
    assert error.param == param
    assert "only one structured-output constraint" in error.message


@pytest.mark.parametrize("fields, param, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", "needs json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema", "not a valid JSON Schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"a": {"pattern": "("}}}}}},
     "response_format.json_schema.schema", "properties/a/pattern"),
    ({"guided_json": "[1, 2]"}, "guided_json", "must be a JSON Schema object"),
    ({"guided_json": "{nope"}, "guided_json", "not JSON"),
    ({"guided_json": {"required": "name"}}, "guided_json", "not a valid JSON Schema"),
    ({"guided_json": {"$schema": {"x": 1}}}, "guided_json", "$schema must be a string"),
    ({"guided_regex": "(unclosed"}, "guided_regex", "not a valid regular expression"),
    ({"guided_regex": ""}, "guided_regex", "must not be empty"),
    ({"guided_choice": []}, "guided_choice", "non-empty"),
    ({"guided_choice": ["a", ""]}, "guided_choice", "non-empty"),
    ({"guided_grammar": "  "}, "guided_grammar", "must not be empty"),
])
def test_invalid_constraints(fields, param, words):
    error = rejected(**fields)
    assert error.param == param
    assert words in error.message, error.message


def test_unknown_response_format_type_is_a_decode_error():
    with pytest.raises(msgspec.ValidationError, match="response_format.type"):
        chat(response_format={"type": "xml"})


def test_response_format_given_as_a_dict_by_a_translation():
    """The Responses and Anthropic translations build the chat request in Python, with plain dicts."""
    request = ChatCompletionRequest(model="tiny", messages=[], response_format={  # type: ignore[arg-type]
        "type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}})
    assert guided_decoding(request, None) == GuidedDecoding(json=SCHEMA)
    bad = ChatCompletionRequest(model="tiny", messages=[], response_format={"type": "nope"})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as info:
        guided_decoding(bad, None)
    assert info.value.param == "response_format"


def test_completions_take_guided_fields_too():
    request = msgspec.json.decode(b'{"model": "tiny", "prompt": "x", "guided_choice": ["a", "b"]}',
                                  type=CompletionRequest)
    assert guided_decoding(request, None) == GuidedDecoding(choice=["a", "b"])


def test_schema_depth_limit():
    deep: dict = {"type": "string"}
    for _ in range(100):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(InvalidRequest, match="nested more than"):
        check_schema(deep, "guided_json")


def test_schema_with_other_draft_and_refs():
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "number"}},
              "type": "object", "properties": {"x": {"$ref": "#/definitions/n"}}}
    assert check_schema(schema, "guided_json") is schema


RESPONSES_NAMES = {"response_format": "text.format", SCHEMA_FIELD: "text.format.schema"}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}


def test_a_door_names_its_own_format_field():
    """The Responses API's 400s name ``text.format``, the field its client sent."""
    request = chat(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}})
    with pytest.raises(InvalidRequest) as info:
        guided_decoding(request, None, RESPONSES_NAMES)
    assert info.value.param == "text.format.schema" and "text.format.schema" in info.value.message
    both = chat(response_format={"type": "json_object"}, guided_choice=["a"])
    with pytest.raises(InvalidRequest, match="text.format, guided_choice"):
        guided_decoding(both, None, RESPONSES_NAMES)


@pytest.mark.parametrize("response_format", [SCHEMA_FORMAT, {"type": "json_object"}])
def test_a_call_to_one_function_satisfies_the_response_format(response_format):
    """instructor's RESPONSES_TOOLS mode sends a named tool_choice and the same schema as text.format."""
    request = chat(response_format=response_format)
    check_forced_call(request, guided_decoding(request, None), True)
    check_forced_call(request, None, False)  # no structured output: nothing to combine


def test_forced_call_contradictions_name_the_field_sent():
    request = chat(response_format=SCHEMA_FORMAT)
    for names, param in ((None, "response_format"), (RESPONSES_NAMES, "text.format")):
        with pytest.raises(InvalidRequest, match="several tools") as info:
            check_forced_call(request, guided_decoding(request, None, names), False, names)
        assert info.value.param == param and info.value.message.startswith(param)
    for fields in ({"guided_json": SCHEMA}, {"guided_regex": "a+"}, {"nvext": {"guided_choice": ["a"]}},
                   {"response_format": {"type": "text"}, "guided_json": SCHEMA}):
        with pytest.raises(InvalidRequest, match="cannot be combined") as info:
            check_forced_call(chat(**fields), guided(**fields), True)
        assert info.value.param == "tool_choice"
