"""The OpenAPI document built from frontend/http/routes.py: valid OpenAPI 3.1, and every served route in it."""

from __future__ import annotations

import json

import msgspec
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from frontend.http import app, openapi, routes


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(routes.spec_bytes())


def test_spec_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1.")
    validate(spec)  # raises OpenAPIValidationError with the path of the first problem


def test_every_route_of_the_app_is_in_the_spec_and_nothing_else(spec):
    served = {(route.method.lower(), route.path) for route in routes.ROUTES if route.summary}
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert documented == served
    unlisted = [route.path for route in routes.ROUTES if not route.summary and not route.prefix]
    assert unlisted and all(path.startswith("/docs/") for path in unlisted)  # only Swagger UI's files


def test_the_app_dispatches_every_route_of_the_table():
    for route in routes.ROUTES:
        if route.prefix:
            for method in ("GET", "DELETE"):
                assert app.route_of(route.prefix + "x", method) is route
        else:
            assert app.route_of(route.path, route.method) is route
        if route.method == "POST":
            assert route.label, f"{route.path} has no metrics label"
    assert app.route_of("/v1/chat/completions", "GET") is None and app.route_of("/nope", "POST") is None
    # a parameter route without a label is served outside admission and the request metrics
    assert [route.path for route in routes.ROUTES if route.prefix and not route.label] == ["/v1/models/{model}"]


def _refs(node, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.append(value)
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)
    return found


def _resolve(spec: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_ref_resolves(spec):
    refs = set(_refs(spec, []))
    assert "#/components/schemas/ChatCompletionRequest" in refs
    assert "#/components/schemas/ErrorResponse" in refs
    for ref in refs:
        assert isinstance(_resolve(spec, ref), dict), ref
    unused = set(spec["components"]["schemas"]) - {ref.rsplit("/", 1)[1] for ref in refs}
    assert not unused, f"schemas nothing refers to: {unused}"


def test_operation_ids_are_unique_and_errors_use_the_openai_shape(spec):
    operations = [op for item in spec["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)), ids
    for name, response in spec["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}


def _validator(spec: dict, schema: dict) -> OAS31Validator:
    return OAS31Validator({**schema, "components": spec["components"]})


@pytest.mark.parametrize("operation", [route for route in routes.ROUTES if route.request_examples],
                         ids=lambda op: op.path)
def test_request_examples_decode_and_match_the_schema(spec, operation):
    media = spec["paths"][operation.path][operation.method.lower()]["requestBody"]["content"]["application/json"]
    validator = _validator(spec, media["schema"])
    for name, example in media["examples"].items():
        validator.validate(example["value"])
        msgspec.convert(example["value"], operation.request)  # what the handler decodes


def test_encoded_responses_match_their_schemas(spec):
    from frontend.protocol.openai import (AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk,
                                          ChatChunkChoice, ChatDelta, ErrorDetail, ErrorResponse, Usage)

    def check(path: str, body, content_type: str = "application/json", status: str = "200") -> None:
        response = spec["paths"][path]["post"]["responses"][status]
        if "$ref" in response:
            response = _resolve(spec, response["$ref"])
        media = response["content"][content_type]
        schema = media.get("x-sse-data-schema", media["schema"])
        _validator(spec, schema).validate(json.loads(msgspec.json.encode(body)))

    usage = Usage(3, 2, 5)
    check("/v1/chat/completions",
          ChatCompletion("chatcmpl-1", 1, "tiny", [ChatChoice(0, AssistantMessage("hi"), "length")], usage))
    chunk = ChatCompletionChunk("chatcmpl-1", 1, "tiny", [ChatChunkChoice(0, ChatDelta("assistant"))])
    check("/v1/chat/completions", chunk, "text/event-stream")
    check("/v1/chat/completions", ErrorResponse(ErrorDetail("no", "invalid_request_error", "model", None)),
          status="400")


def test_health_and_live_503s_match_their_documented_bodies(spec):
    from types import SimpleNamespace

    from frontend.http import info

    sent = []
    proto = SimpleNamespace(response_bytes=lambda status, headers, body: sent.append((status, body)))
    for draining in (False, True):
        gateway = SimpleNamespace(models=SimpleNamespace(instances=[], discovery=None),
                                  settings=SimpleNamespace(namespace="dynamo"), indexer_status=None, draining=draining)
        info.health(gateway, proto)
        info.live(gateway, proto)
    [(health, body), (live, _), (draining_health, draining_body), (draining_live, draining_live_body)] = sent
    assert (health, live, draining_health, draining_live) == (503, 200, 503, 503)
    health_schema = spec["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    live_schema = spec["paths"]["/live"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    for schema, answer in ((health_schema, body), (health_schema, draining_body), (live_schema, draining_live_body)):
        _validator(spec, schema).validate(json.loads(answer))
    assert msgspec.json.decode(draining_body, type=openapi.HealthUnavailable).status == "shutting_down"
    assert msgspec.json.decode(draining_live_body, type=openapi.LiveStatus).status == "shutting_down"


def test_spec_bytes_are_built_once():
    assert routes.spec_bytes() is routes.spec_bytes()


def test_swagger_ui_assets_are_in_the_package():
    for name in openapi.ASSET_TYPES:
        assert (openapi.SWAGGER_UI_DIR / name).is_file(), name
    assert openapi.SWAGGER_UI_VERSION.split(".")[0] == "5"  # 4.x cannot render OpenAPI 3.1
