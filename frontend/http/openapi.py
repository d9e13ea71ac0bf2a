"""``GET /openapi.json`` (OpenAPI 3.1, generated from the msgspec wire types) and ``GET /docs`` (Swagger UI).

The spec is built from the route table (``routes.py``; one :class:`~frontend.http.route.Route` per served
(method, path), see ``route.py`` for how to describe one). JSON Schemas of the request and response bodies are
generated from the msgspec types with ``msgspec.json.schema_components``, so the spec follows the types the
handlers really decode and encode. The spec is built on first use and kept as bytes (one copy per HTTP worker
process).

``/docs`` serves Swagger UI from the ``swagger-ui-bundle-v2`` package's files (no CDN): the page, a small
initializer script, and a fixed allow-list of the bundle's assets under a versioned path
(``/docs/swagger-ui-<version>/...``, cached for a year as immutable). Every URL in the page is relative,
as is the spec's server (``/``), so "Try it out" calls the server that served the page, also behind a
path-prefix proxy. The asset routes are exact paths in the route table: nothing maps a request path to a
file name, so there is no path to traverse.

The document declares an optional ``bearerAuth`` scheme (``Authorization: Bearer``), so that Swagger UI's
"Authorize" button sends the key of a server started with ``--api-key``; the page and the document themselves are
open by default (``--api-key-exempt``), so the UI loads without one.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal

import msgspec
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..protocol.indexer import WorkerIndexStatus
from ..protocol.openai import ErrorResponse
from .route import Route

# ---- documentation types for bodies that handlers build as dicts (info.py) -------------------------------


class InstanceLoad(msgspec.Struct, forbid_unknown_fields=True):
    """A worker's active load, as all HTTP processes together put it on it, and as the worker's engine reports it
    (zeros from a worker that does not report its load)."""

    active_requests: int
    active_blocks: int
    active_prefill_tokens: int
    engine_running_requests: int
    engine_waiting_requests: int
    engine_kv_blocks_used: int


class HealthInstance(msgspec.Struct, forbid_unknown_fields=True):
    instance_id: str
    model: str
    endpoint: str
    namespace: str
    transport: str
    load: InstanceLoad | None
    draining: bool  # shutting down: finishing its requests, routed no new ones
    disaggregation_mode: Literal["agg", "prefill", "decode"]  # the worker's role (prefill: only prefill legs)


class KvIndexSummary(msgspec.Struct, forbid_unknown_fields=True):
    live_blocks: int
    dropped_inserts: int
    workers: dict[str, WorkerIndexStatus]


class HealthReport(msgspec.Struct, forbid_unknown_fields=True):
    """GET /health while at least one worker instance is live."""

    status: Literal["healthy"]
    endpoints: list[str]
    instances: list[HealthInstance]
    router_mode: str
    kv_index: KvIndexSummary
    warnings: list[str]


class HealthUnavailable(msgspec.Struct, forbid_unknown_fields=True):
    """GET /health while no worker instance is live, or once the server is shutting down (503)."""

    status: Literal["unhealthy", "shutting_down"]
    message: str
    endpoints: list[str]
    instances: list[HealthInstance]


class LiveStatus(msgspec.Struct, forbid_unknown_fields=True):
    """GET /live: ``live`` (200), or ``shutting_down`` (503)."""

    status: Literal["live", "shutting_down"]
    message: str


# ---- the table ---------------------------------------------------------------------------------------------

ERROR_STATUSES: dict[int, tuple[str, str]] = {
    # status: (component name, description)
    400: ("BadRequest", "Invalid request: malformed JSON, a missing or invalid field (`param` names it), a "
                        "feature that is not available, or prompt + max_tokens over the context window."),
    401: ("Unauthorized", "The server was started with `--api-key` and the request has no API key, or a wrong "
                          "one (`code: invalid_api_key`)."),
    404: ("NotFound", "The model is not served by any registered worker."),
    413: ("PayloadTooLarge", "The request body is larger than `--http-body-limit-mb`."),
    500: ("InternalError", "A bug in the frontend (logged with its traceback)."),
    502: ("BadGateway", "The worker reported an error while generating."),
    503: ("ServiceUnavailable", "No live worker for the model, too many concurrent requests, or shutting "
                                "down; retry after the `Retry-After` seconds."),
}
GENERATION_ERRORS = (400, 401, 404, 413, 500, 502, 503)
INFO_ERRORS = (500,)


# ---- spec generation -------------------------------------------------------------------------------------

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{name}"


def build_spec(routes: tuple[Route, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the listed ``routes`` as a dict."""
    types: list[Any] = []  # every type whose schema an operation refers to, in a fixed order

    def use(tp: Any) -> int:
        types.append(tp)
        return len(types) - 1

    planned = []
    for op in (route for route in routes if route.listed):
        planned.append((op, {
            "request": use(op.request) if op.request is not None else None,
            "response": use(op.response) if op.response is not None else None,
            "stream": use(op.stream) if op.stream is not None else None,
            "error": use(op.error_schema) if op.errors else None,
            "responses": {status: use(tp) for status, (_, tp) in op.responses.items() if tp is not None},
        }))
    default_error = use(ErrorResponse)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)

    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for op, refs in planned:
        if op.tag not in tags:
            tags.append(op.tag)
        operation: dict[str, Any] = {"tags": [op.tag], "summary": op.summary, "operationId": op.operation_id}
        if op.description:
            operation["description"] = op.description
        if op.parameters:
            operation["parameters"] = [dict(parameter) for parameter in op.parameters]
        if refs["request"] is not None:
            media: dict[str, Any] = {"schema": schemas[refs["request"]]}
            if op.request_examples:
                media["examples"] = dict(op.request_examples)
            operation["requestBody"] = {"required": True, "content": {"application/json": media}}
        content: dict[str, Any] = {}
        if refs["response"] is not None:
            content["application/json"] = {"schema": schemas[refs["response"]]}
        if op.response_content_type:
            content[op.response_content_type] = {"schema": {"type": "string"}}
        if refs["stream"] is not None:
            event = schemas[refs["stream"]]
            name = event.get("$ref", "").rsplit("/", 1)[-1] or "JSON"
            content["text/event-stream"] = {"schema": {
                "type": "string",
                "description": op.stream_description or (
                    f"With `stream: true`: server-sent events, each `data: <{name} JSON>` followed by a blank "
                    "line, and `data: [DONE]` last. An error after the stream started comes as one "
                    "`data: <ErrorResponse JSON>` event."),
            }, "x-sse-data-schema": event}
        responses: dict[str, Any] = {"200": {"description": op.response_description, "content": content}}
        for status, (description, tp) in sorted(op.responses.items()):
            entry: dict[str, Any] = {"description": description}
            if tp is not None:
                entry["content"] = {"application/json": {"schema": schemas[refs["responses"][status]]}}
            responses[str(status)] = entry
        for status in op.errors:
            if str(status) in responses:
                continue
            name, description = ERROR_STATUSES[status]
            if op.error_schema is ErrorResponse:
                responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
            else:
                responses[str(status)] = {"description": description, "content": {
                    "application/json": {"schema": schemas[refs["error"]]}}}
        operation["responses"] = responses
        method = op.method.lower()
        if method in paths.setdefault(op.path, {}):
            raise ValueError(f"two operations for {op.method} {op.path}")
        paths[op.path][method] = operation

    error_responses: dict[str, Any] = {}
    for status, (name, description) in ERROR_STATUSES.items():
        entry = {"description": description,
                 "content": {"application/json": {"schema": schemas[default_error]}}}
        if status == 503:
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                                "schema": {"type": "integer"}}}
        elif status == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}}
        error_responses[name] = entry

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "dynamo-py-frontend",
            "version": __version__,
            "summary": "OpenAI-compatible API gateway for LLM inference workers.",
            "description": "Errors are OpenAI's `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`. "
                           "A server started with `--api-key` wants `Authorization: Bearer <key>` (the Anthropic "
                           "routes also take `x-api-key`); `/live`, `/health`, `/metrics`, `/docs` and this "
                           "document are open by default (`--api-key-exempt`). "
                           "Besides OpenAI's request fields the frontend accepts vLLM-style sampling fields "
                           "(`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`, `min_tokens`, ...).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "This server"}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "security": [{}, {"bearerAuth": []}],  # optional: only servers started with --api-key check it
        "components": {"schemas": components, "responses": error_responses, "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "An API key of `--api-key` / `--api-key-file`, when the server has any."}}},
    }


@functools.cache
def spec_bytes(routes: tuple[Route, ...]) -> bytes:
    """The spec of ``routes`` as JSON bytes, built on first use."""
    return msgspec.json.encode(build_spec(routes))


# ---- handlers ----------------------------------------------------------------------------------------------

_NO_CACHE = ("cache-control", "no-cache")
_NOSNIFF = ("x-content-type-options", "nosniff")
_IMMUTABLE = ("cache-control", "public, max-age=31536000, immutable")
# The page loads only its own assets; "Try it out" fetches only from this origin.
_DOCS_CSP = ("content-security-policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                        "script-src 'self'; connect-src 'self'; object-src 'none'; "
                                        "frame-ancestors 'self'; base-uri 'self'")


SWAGGER_UI_DIR = swagger_ui_path  # .../swagger_ui_bundle/vendor/swagger-ui-<version>
SWAGGER_UI_VERSION = SWAGGER_UI_DIR.name.removeprefix("swagger-ui-")
ASSETS_PATH = f"/docs/swagger-ui-{SWAGGER_UI_VERSION}/"


# The bundle's files /docs serves (an allow-list; source maps and the standalone preset are not needed).
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

_INITIALIZER = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"""


@functools.cache
def _docs_page() -> bytes:
    assets = ASSETS_PATH.lstrip("/")  # relative to /docs, so that a path-prefix proxy keeps working
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dynamo-py-frontend API</title>
<link rel="stylesheet" href="{assets}swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{assets}favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}swagger-ui-bundle.js"></script>
<script src="docs/swagger-initializer.js"></script>
</body>
</html>
""".encode()


def docs(gateway, proto) -> None:
    proto.response_bytes(200, [("content-type", "text/html; charset=utf-8"), _NO_CACHE, _NOSNIFF, _DOCS_CSP],
                         _docs_page())


def docs_slash(gateway, proto) -> None:
    """/docs/ -> /docs (relative, so that the page's relative URLs resolve the same way)."""
    proto.response_empty(301, [("location", "../docs")])


def _initializer(gateway, proto) -> None:
    proto.response_bytes(200, [("content-type", "text/javascript; charset=utf-8"), _NO_CACHE, _NOSNIFF],
                         _INITIALIZER)


@functools.cache
def _asset_bytes(name: str) -> bytes:
    return (SWAGGER_UI_DIR / name).read_bytes()


def _asset_handler(name: str) -> Callable[[Any, Any], None]:
    headers = [("content-type", ASSET_TYPES[name]), _IMMUTABLE, _NOSNIFF]

    def serve(gateway, proto) -> None:
        proto.response_bytes(200, headers, _asset_bytes(name))

    return serve


def document_routes(api_routes: tuple[Route, ...]) -> tuple[Route, ...]:
    """``/openapi.json`` (the spec of ``api_routes`` and these) and ``/docs`` (both in the spec), and Swagger UI's
    files (not in it: exact paths, so nothing maps a request path to a file name)."""

    def openapi_json(gateway, proto) -> None:
        proto.response_bytes(200, [("content-type", "application/json"), _NO_CACHE, _NOSNIFF],
                             spec_bytes(documented))

    listed = (
        Route("GET", "/openapi.json", "This OpenAPI document", tag="service", operation_id="getOpenAPI",
              handler=openapi_json, response=dict[str, Any]),
        Route("GET", "/docs", "Swagger UI for this document", tag="service", operation_id="getDocs", handler=docs,
              response_content_type="text/html; charset=utf-8"),
    )
    documented = api_routes + listed
    assets = {ASSETS_PATH + name: _asset_handler(name) for name in ASSET_TYPES}
    unlisted = {"/docs/": docs_slash, "/docs/swagger-initializer.js": _initializer, **assets}
    return listed + tuple(Route("GET", path, handler=handler) for path, handler in unlisted.items())
