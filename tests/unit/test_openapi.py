"""The OpenAPI document of frontend/http/openapi.py: valid OpenAPI 3.1, in step with app.py's route tables."""

from __future__ import annotations

import json

import msgspec
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from frontend.http import app, openapi


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(openapi.spec_bytes())


def test_spec_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1.")
    validate(spec)  # raises OpenAPIValidationError with the path of the first problem


def test_every_route_of_the_app_is_in_the_spec_and_nothing_else(spec):
    served = {("post", path) for path in app.POST_ROUTES}
    served |= {("get", path) for path in app.GET_ROUTES if path not in openapi.UNLISTED_ROUTES}
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    missing = sorted(served - documented)
    assert not missing, (f"routes served by frontend/http/app.py but missing from the OpenAPI table "
                         f"(add an Operation to OPERATIONS in frontend/http/openapi.py): {missing}")
    extra = sorted((method, path) for method, path in documented - served
                   if not ("{" in path and any(path.startswith(prefix) for prefix in app.PREFIX_ROUTES)))
    assert not extra, f"operations in frontend/http/openapi.py that app.py does not serve: {extra}"


def test_unlisted_routes_are_only_swagger_ui_files():
    assert openapi.UNLISTED_ROUTES <= set(app.GET_ROUTES)
    assert all(path.startswith("/docs/") for path in openapi.UNLISTED_ROUTES)


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


@pytest.mark.parametrize("operation", [op for op in openapi.OPERATIONS if op.request_examples],
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


def test_health_without_workers_matches_its_documented_503(spec):
    from types import SimpleNamespace

    from frontend.http import info

    sent = []
    proto = SimpleNamespace(response_bytes=lambda status, headers, body: sent.append((status, body)))
    gateway = SimpleNamespace(models=SimpleNamespace(instances=[]), settings=SimpleNamespace(namespace="dynamo"),
                              indexer_status=None)
    info.health(gateway, proto)
    [(status, body)] = sent
    assert status == 503
    schema = spec["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    _validator(spec, schema).validate(json.loads(body))
    msgspec.json.decode(body, type=openapi.HealthUnavailable)


def test_spec_bytes_are_built_once():
    assert openapi.spec_bytes() is openapi.spec_bytes()


def test_swagger_ui_assets_are_in_the_package():
    for name in openapi.ASSET_TYPES:
        assert (openapi.SWAGGER_UI_DIR / name).is_file(), name
    assert openapi.SWAGGER_UI_VERSION.split(".")[0] == "5"  # 4.x cannot render OpenAPI 3.1
