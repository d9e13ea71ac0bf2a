"""Structured output end to end: response_format (json_object, json_schema) and guided_* are validated (400s
naming the field) and reach the worker, whose mock engine answers with conforming JSON or one of the choices;
the openai SDK's ``parse`` helper reads the answers into pydantic models; a named tool_choice with a
response_format (or the Responses API's text.format) is answered with the call."""

from __future__ import annotations

import json

import jsonschema
import openai
import pydantic
import pytest
from e2e_support import MODEL, error_of

MESSAGES = [{"role": "user", "content": "Describe a city as JSON."}]
CITY = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 3},
    "population": {"type": "integer", "minimum": 1000, "maximum": 5000000},
    "coastal": {"type": "boolean"},
    "area_km2": {"type": "number", "exclusiveMinimum": 0},
    "climate": {"enum": ["arid", "temperate", "tropical"]},
    "districts": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "rank": {"type": "integer"}},
        "required": ["name", "rank"], "additionalProperties": False}},
    "mayor": {"$ref": "#/$defs/person"}},
    "required": ["name", "population", "districts", "mayor"],
    "$defs": {"person": {"type": "object", "properties": {"first": {"type": "string"}, "last": {"type": "string"},
                                                         "email": {"type": "string", "format": "email"}},
                         "required": ["first", "last"]}}}
JSON_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}


def chat(client, **kwargs):
    kwargs.setdefault("max_tokens", 400)
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, **kwargs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_answers_validate(client, seed):
    response = chat(client, seed=seed, response_format=JSON_SCHEMA_FORMAT)
    assert response.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(response.choices[0].message.content), CITY)


def test_json_schema_streamed_equals_unary(client):
    unary = chat(client, seed=4, response_format=JSON_SCHEMA_FORMAT).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(client, seed=4, stream=True,
                                                                      response_format=JSON_SCHEMA_FORMAT))
    assert streamed == unary
    jsonschema.validate(json.loads(streamed), CITY)


def test_json_object(client):
    content = chat(client, seed=5, response_format={"type": "json_object"}).choices[0].message.content
    assert isinstance(json.loads(content), dict) and json.loads(content)


@pytest.mark.parametrize("form", ["object", "string"])
def test_guided_json(client, form):
    schema = CITY if form == "object" else json.dumps(CITY)
    content = chat(client, seed=6, extra_body={"guided_json": schema}).choices[0].message.content
    jsonschema.validate(json.loads(content), CITY)


def test_guided_choice_chat_and_completions(client):
    options = ["positive", "negative", "neutral"]
    answers = {chat(client, seed=seed, extra_body={"guided_choice": options}).choices[0].message.content
               for seed in range(8)}
    assert answers <= set(options) and len(answers) > 1
    completion = client.completions.create(model=MODEL, prompt="Sentiment:", max_tokens=5, seed=1,
                                           extra_body={"guided_choice": options})
    assert completion.choices[0].text in options


def test_regex_and_grammar_reach_the_worker_but_the_mock_ignores_them(client):
    for extra in ({"guided_regex": r"\d{3}-\d{4}"}, {"guided_grammar": 'root ::= "yes" | "no"'}):
        response = chat(client, seed=7, max_tokens=8, extra_body=extra)
        assert response.choices[0].message.content  # the mock's corpus text: not honoured, not refused


def test_sdk_parse_into_a_pydantic_model(client):
    class District(pydantic.BaseModel):
        name: str
        rank: int

    class City(pydantic.BaseModel):
        name: str
        population: int
        coastal: bool
        districts: list[District]

    completion = client.chat.completions.parse(model=MODEL, messages=MESSAGES, max_tokens=400, seed=8,
                                               response_format=City)
    city = completion.choices[0].message.parsed
    assert isinstance(city, City) and city.districts and isinstance(city.districts[0], District)


def test_tool_choice_required_gets_guided_calls(client):
    """Without a tool parser, the forced call's JSON schema is what makes the mock answer with a call."""
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    response = chat(client, seed=9, tools=[tool], tool_choice="required")
    calls = response.choices[0].message.tool_calls
    assert calls and {c.function.name for c in calls} == {"get_weather"}
    assert response.choices[0].finish_reason == "tool_calls"
    assert "city" in json.loads(calls[0].function.arguments)


@pytest.mark.parametrize("extra, param, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", "needs json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema", "not a valid JSON Schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "yaml"),
    ({"response_format": {"type": "json_object"}, "guided_choice": ["a"]}, "guided_choice", "only one"),
    ({"guided_regex": "a", "guided_json": {"type": "object"}}, "guided_regex", "only one"),
    ({"guided_regex": "[unclosed"}, "guided_regex", "not a valid regular expression"),
    ({"guided_choice": []}, "guided_choice", "non-empty"),
    ({"guided_json": "{not json"}, "guided_json", "not JSON"),
    ({"guided_json": {"properties": 5}}, "guided_json", "not a valid JSON Schema"),
    ({"guided_grammar": ""}, "guided_grammar", "must not be empty"),
    ({"guided_json": {"type": "object"}, "tool_choice": "required", "tools": [
        {"type": "function", "function": {"name": "f"}}]}, "tool_choice", "cannot be combined"),
])
def test_invalid_structured_output_is_a_400(daemon, extra, param, words):
    response = daemon.http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **extra})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == param and words in error["message"], error
    if "tools" not in extra:  # the same checks on completions
        completions = daemon.http.post("/v1/completions", json={"model": MODEL, "prompt": "x", **extra})
        assert completions.status_code == 400, completions.text
        assert error_of(completions)["param"] == param


def test_structured_output_on_responses_and_anthropic(daemon):
    """The chat-derived APIs translate their structured-output settings into the same constraint."""
    text = {"format": {"type": "json_schema", "name": "city", "schema": CITY}}
    response = daemon.http.post("/v1/responses", json={"model": MODEL, "input": "A city", "text": text,
                                                       "max_output_tokens": 400})
    assert response.status_code == 200, response.text
    output = [item for item in response.json()["output"] if item["type"] == "message"][0]
    jsonschema.validate(json.loads(output["content"][0]["text"]), CITY)
    bad = daemon.http.post("/v1/responses", json={"model": MODEL, "input": "A city", "text": {
        "format": {"type": "json_schema", "name": "x", "schema": {"type": 12}}}})
    assert bad.status_code == 400, bad.text
    assert error_of(bad)["param"] == "text.format.schema"  # the field the client sent


CITY_TOOL = {"type": "function", "function": {"name": "city", "description": "Record a city.", "parameters": CITY}}


def test_named_tool_choice_with_response_format_on_chat(client):
    """instructor's TOOLS modes: a named tool_choice and a response_format together; the call wins, and its
    arguments are the structured output."""
    for stream in (False, True):
        kwargs = dict(seed=10, tools=[CITY_TOOL], tool_choice={"type": "function", "function": {"name": "city"}},
                      response_format=JSON_SCHEMA_FORMAT)
        if stream:
            chunks = list(chat(client, stream=True, **kwargs))
            arguments = "".join(call.function.arguments or "" for chunk in chunks if chunk.choices
                                for call in chunk.choices[0].delta.tool_calls or [])
            finish_reason = chunks[-1].choices[0].finish_reason
        else:
            choice = chat(client, **kwargs).choices[0]
            assert [call.function.name for call in choice.message.tool_calls] == ["city"]
            arguments, finish_reason = choice.message.tool_calls[0].function.arguments, choice.finish_reason
        assert finish_reason == "tool_calls"
        jsonschema.validate(json.loads(arguments), CITY)


def test_named_tool_choice_with_text_format_on_responses(client):
    """instructor's RESPONSES_TOOLS mode: the tool's parameters and text.format are the same schema."""
    response = client.responses.create(
        model=MODEL, input="Describe a city.", max_output_tokens=400,
        tools=[{"type": "function", "name": "city", "parameters": CITY, "strict": True}],
        tool_choice={"type": "function", "name": "city"},
        text={"format": {"type": "json_schema", "name": "City", "schema": CITY, "strict": True}})
    assert response.status == "completed"
    calls = [item for item in response.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["city"]
    jsonschema.validate(json.loads(calls[0].arguments), CITY)


def test_required_call_among_several_tools_with_a_format_is_a_400(client):
    """The model may call either tool: their arguments cannot all be the one format. The 400 names the field as
    each API calls it."""
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, tools=[CITY_TOOL, other], tool_choice="required", response_format=JSON_SCHEMA_FORMAT)
    assert caught.value.param == "response_format" and "several tools" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODEL, input="Describe a city.", tool_choice="required",
            tools=[{"type": "function", "name": "city", "parameters": CITY},
                   {"type": "function", "name": "other", "parameters": {"type": "object"}}],
            text={"format": {"type": "json_schema", "name": "City", "schema": CITY}})
    assert caught.value.param == "text.format" and "several tools" in caught.value.message
    one = chat(client, seed=11, tools=[CITY_TOOL], tool_choice="required", response_format=JSON_SCHEMA_FORMAT)
    assert one.choices[0].message.tool_calls[0].function.name == "city"  # one tool: as if named
