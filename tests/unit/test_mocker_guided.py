"""The mock engine's structured output (frontend.engines.mocker.guided): every document validates against its schema."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import jsonschema
import pytest
from tokenizers import Tokenizer

from frontend.engines.mocker.corpus import Corpus
from frontend.engines.mocker.engine import EngineSettings, MockEngine
from frontend.engines.mocker.guided import JsonFaker, guided_text
from frontend.protocol.engine import GenerateRequest, GuidedDecoding, SamplingOptions, StopConditions

TINY_TOKENIZER = Path(__file__).resolve().parents[2] / "config" / "models" / "tiny" / "tokenizer.json"

SCHEMAS = {
    "flat object": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                                     "ok": {"type": "boolean"}, "score": {"type": "number"}},
                    "required": ["name", "age"]},
    "bounds": {"type": "object", "properties": {
        "i": {"type": "integer", "minimum": 10, "maximum": 12},
        "j": {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": -3},
        "k": {"type": "integer", "minimum": 7, "multipleOf": 5},
        "f": {"type": "number", "minimum": 0.5, "maximum": 0.75},
        "s": {"type": "string", "minLength": 30, "maxLength": 40},
        "t": {"type": "string", "maxLength": 3}}, "required": ["i", "j", "k", "f", "s", "t"]},
    "enum and const": {"type": "object", "properties": {"color": {"enum": ["red", "green"]}, "v": {"const": 3},
                                                        "mixed": {"enum": [1, "two", None]}}},
    "nested and arrays": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
        "points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"},
                                                                               "y": {"type": "number"}},
                                              "required": ["x", "y"], "additionalProperties": False}},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
        "inner": {"type": "object", "properties": {"deeper": {"type": "object", "properties": {
            "leaf": {"type": ["string", "null"]}}}}}}, "required": ["tags", "points", "inner"]},
    "formats": {"type": "object", "properties": {f: {"type": "string", "format": f}
                                                 for f in ("date", "date-time", "time", "email", "uri", "uuid")}},
    "refs and combinators": {
        "$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}},
                           "required": ["id"]}},
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                       "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                       "one": {"oneOf": [{"type": "boolean"}]},
                       "all": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}},
                                          "required": ["a"]},
                                         {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]}},
        "required": ["items", "either", "all"]},
    "top-level array": {"type": "array", "items": {"type": "number"}, "minItems": 1},
    "no type": {"properties": {"a": {"type": "string"}}},
    "json_object": {"type": "object"},
    "strict (pydantic style)": {"type": "object", "additionalProperties": False,
                                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                                "required": ["city", "days"]},
    "forced tool calls": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"anyOf": [
        {"type": "object", "properties": {"name": {"type": "string", "enum": ["get_weather"]},
                                          "parameters": {"type": "object"}}, "required": ["name", "parameters"]}]}},
}


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("seed", range(6))
def test_documents_validate(name, seed):
    schema = SCHEMAS[name]
    text = guided_text(GuidedDecoding(json=schema), random.Random(seed))
    document = json.loads(text)
    jsonschema.validate(document, schema)


def test_json_object_gets_a_non_empty_object():
    assert json.loads(guided_text(GuidedDecoding(json={"type": "object"}), random.Random(1)))


def test_same_seed_same_document_and_choice():
    schema = SCHEMAS["nested and arrays"]
    one = guided_text(GuidedDecoding(json=schema), random.Random(42))
    assert one == guided_text(GuidedDecoding(json=schema), random.Random(42))
    assert guided_text(GuidedDecoding(choice=["a", "b", "c"]), random.Random(3)) in ("a", "b", "c")


def test_regex_and_grammar_are_not_honoured():
    assert guided_text(GuidedDecoding(regex="a+"), random.Random(0)) is None
    assert guided_text(GuidedDecoding(grammar='root ::= "a"'), random.Random(0)) is None


def test_recursive_ref_terminates():
    schema = {"$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
              "$ref": "#/$defs/node"}
    document = JsonFaker(schema, random.Random(0)).value(schema, 0)
    jsonschema.validate(document, schema)


@pytest.mark.parametrize("schema", [
    {"type": "array", "minItems": 10**9},
    {"type": "string", "minLength": 10**9},
    {"type": "array", "minItems": 40, "items": {"type": "array", "minItems": 40, "items": {
        "type": "array", "minItems": 40, "items": {"type": "array", "minItems": 40}}}},
    {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
], ids=["minItems", "minLength", "nested arrays", "allOf fan-out"])
def test_a_document_too_large_to_fake_is_refused_at_once(schema):
    """Such schemas blocked the mock's event loop (the worker hung, its lease expired, the model vanished);
    a ValueError makes the engine answer plain text instead (MockEngine._guided_output)."""
    with pytest.raises(ValueError, match="more than"):
        guided_text(GuidedDecoding(json=schema), random.Random(0))


def test_numbers_with_huge_bounds_stay_finite():
    schema = {"type": "number", "minimum": -1e308, "maximum": 1e308}
    for seed in range(5):
        value = json.loads(guided_text(GuidedDecoding(json=schema), random.Random(seed)))  # not "Infinity"
        jsonschema.validate(value, schema)


def test_engine_generates_the_document_token_by_token():
    tokenizer = Tokenizer.from_file(str(TINY_TOKENIZER))
    engine = MockEngine(Corpus(tokenizer), EngineSettings(speedup_ratio=1e12))
    schema = SCHEMAS["flat object"]
    sent: list[int] = []
    done = asyncio.Event()
    reasons = []

    class Sink:
        finished = False

        def send(self, token_ids, finish_reason=None, logprobs=None, error=None, cached_tokens=0, retryable=False,
                 kv_transfer_params=None):
            sent.extend(token_ids)
            if finish_reason is not None:
                reasons.append(finish_reason)
                self.finished = True
                done.set()

    async def run() -> None:
        task = asyncio.ensure_future(engine.run())
        request = GenerateRequest("g", [1, 2, 3], StopConditions(max_tokens=200),
                                  SamplingOptions(seed=5, guided=GuidedDecoding(json=schema)), [2])
        engine.add_request(request, Sink())
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()

    asyncio.run(run())
    assert reasons == ["stop"]
    jsonschema.validate(json.loads(tokenizer.decode(sent)), schema)
