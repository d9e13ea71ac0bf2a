"""``GET /openapi.json`` (OpenAPI 3.1, generated from the msgspec wire types) and ``GET /docs`` (Swagger UI).

The spec comes from one declarative table, :data:`OPERATIONS`: one :class:`Operation` per served
(method, path). JSON Schemas of the request and response bodies are generated from the msgspec types with
``msgspec.json.schema_components``, so the spec follows the types the handlers really decode and encode.
The spec is built on first use and kept as bytes (one copy per HTTP worker process).

Adding an endpoint (do this in the same change that adds the route to ``app.py``'s ``POST_ROUTES`` or
``GET_ROUTES``; ``tests/unit/test_openapi.py`` fails when a route has no entry here)::

    Operation("POST", "/v1/responses", "Create a model response", tag="responses",
              operation_id="createResponse",
              request=ResponsesRequest,                 # msgspec type of the JSON body
              request_examples={"basic": {"model": "tiny", "input": "Hello!"}},  # Try it out's body
              response=ResponseObject,                  # msgspec type of the 200 JSON body
              stream=ResponseStreamEvent,               # SSE event `data:` type when the body has stream: true
              errors=GENERATION_ERRORS),                # statuses answered with OpenAI's ErrorResponse

* ``errors`` are statuses from :data:`ERROR_STATUSES`; they share one ``#/components/responses/...`` entry
  each, with ``error_schema`` (default :class:`~frontend.protocol.openai.ErrorResponse`) as the body.
  An endpoint with another error shape (e.g. Anthropic's) passes its own ``error_schema``.
* ``responses`` adds other statuses with their own body type, e.g. /health's 503.
* A non-JSON 200 body (Prometheus text, HTML) gives ``response_content_type`` and no ``response`` type.
* ``stream`` documents the ``text/event-stream`` alternative of the 200: a string body described in words,
  with the event data's schema under the media type's ``x-sse-data-schema`` extension (OpenAPI 3.1 has no
  keyword for per-event schemas).
* A type with no home in ``frontend/protocol/`` (a handler building a dict) gets a documentation Struct
  (see :class:`HealthReport`); the e2e tests decode the live responses with these types, strictly.

``/docs`` serves Swagger UI from the ``swagger-ui-bundle-v2`` package's files (no CDN): the page, a small
initializer script, and a fixed allow-list of the bundle's assets under a versioned path
(``/docs/swagger-ui-<version>/...``, cached for a year as immutable). Every URL in the page is relative,
as is the spec's server (``/``), so "Try it out" calls the server that served the page, also behind a
path-prefix proxy. The asset routes are exact paths in ``GET_ROUTES``: nothing maps a request path to a
file name, so there is no path to traverse.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import msgspec
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..protocol.anthropic import (CountTokensRequest, ErrorBody as AnthropicErrorBody, Message as AnthropicMessage,
                                  MessagesRequest, StreamEvent as AnthropicStreamEvent, TokenCount)
from ..protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from ..protocol.indexer import WorkerIndexStatus
from ..protocol.media import ImageGenerationRequest, ImagesResponse, VideoGenerationRequest, VideoResponse
from ..protocol.openai import (ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion,
                               CompletionRequest, ErrorResponse, ModelList)
from ..protocol.responses import ResponseObject, ResponsesRequest, ResponseStreamEvent
from ..protocol.tokenize_api import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse

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
    """GET /health while no worker instance is live (503)."""

    status: Literal["unhealthy"]
    message: str
    endpoints: list[str]
    instances: list[HealthInstance]


class LiveStatus(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["live"]
    message: str


# ---- the table ---------------------------------------------------------------------------------------------

ERROR_STATUSES: dict[int, tuple[str, str]] = {
    # status: (component name, description)
    400: ("BadRequest", "Invalid request: malformed JSON, a missing or invalid field (`param` names it), a "
                        "feature that is not available, or prompt + max_tokens over the context window."),
    404: ("NotFound", "The model is not served by any registered worker."),
    413: ("PayloadTooLarge", "The request body is larger than `--http-body-limit-mb`."),
    500: ("InternalError", "A bug in the frontend (logged with its traceback)."),
    502: ("BadGateway", "The worker reported an error while generating."),
    503: ("ServiceUnavailable", "No live worker for the model, too many concurrent requests, or shutting "
                                "down; retry after the `Retry-After` seconds."),
}
GENERATION_ERRORS = (400, 404, 413, 500, 502, 503)
INFO_ERRORS = (500,)


@dataclass(frozen=True)
class Operation:
    """One served (method, path) of the spec; see the module docstring for how to add one."""

    method: Literal["GET", "POST"]
    path: str
    summary: str
    tag: str
    operation_id: str
    description: str = ""
    request: Any = None  # msgspec type of the JSON request body
    request_examples: Mapping[str, Any] = field(default_factory=dict)  # name -> example body
    response: Any = None  # msgspec type of the 200 body (JSON)
    response_content_type: str | None = None  # of a non-JSON 200 body (then ``response`` is None)
    response_description: str = "OK"
    stream: Any = None  # type of each SSE event's data when the request asks for stream: true
    errors: tuple[int, ...] = ()  # statuses of ERROR_STATUSES
    error_schema: Any = ErrorResponse
    responses: Mapping[int, tuple[str, Any]] = field(default_factory=dict)  # status -> (description, type)
    parameters: tuple[Mapping[str, Any], ...] = ()  # OpenAPI parameter objects (path parameters)


_HELLO = [{"role": "user", "content": "Hello!"}]
_VIDEO = {"model": "tiny-video", "prompt": "A paper boat on a pond", "seconds": 1, "size": "160x96",
          "nvext": {"fps": 8, "seed": 7}}
_MEDIA_NAME = {"name": "name", "in": "path", "required": True, "description": "The file name in the URL the "
               "image or video endpoint answered.", "schema": {"type": "string"}}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/v1/chat/completions", "Create a chat completion", tag="chat", operation_id="createChatCompletion",
        description="Renders the model's chat template over `messages`, generates, and answers one "
                    "`chat.completion` object, or with `stream: true` server-sent events of "
                    "`chat.completion.chunk` objects ending with `data: [DONE]`. `n` choices are generated "
                    "independently (with a `seed`, choice i uses seed + i); streamed chunks carry one choice with "
                    "its `index`. Structured output: one of `response_format` (json_object, json_schema), "
                    "`guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`. `nvext` holds Dynamo's "
                    "extensions; `nvext.annotations` add named SSE events (`event: <name>`) before the data they "
                    "describe. Unknown fields are ignored.",
        request=ChatCompletionRequest,
        request_examples={
            "hello": {"summary": "A short answer", "value": {"model": "tiny", "messages": _HELLO, "max_tokens": 30}},
            "stream": {"summary": "Streamed, with usage",
                       "value": {"model": "tiny", "messages": _HELLO, "max_tokens": 30, "stream": True,
                                 "stream_options": {"include_usage": True}}},
            "json_schema": {"summary": "Structured output (JSON matching a schema)",
                            "value": {"model": "tiny", "messages": _HELLO, "max_tokens": 100, "response_format": {
                                "type": "json_schema", "json_schema": {"name": "greeting", "schema": {
                                    "type": "object", "properties": {"greeting": {"type": "string"},
                                                                     "mood": {"enum": ["happy", "calm"]}},
                                    "required": ["greeting", "mood"]}}}}},
            "choices": {"summary": "Two choices with logprobs and nvext timing",
                        "value": {"model": "tiny", "messages": _HELLO, "max_tokens": 10, "n": 2, "seed": 1,
                                  "logprobs": True, "top_logprobs": 2,
                                  "nvext": {"extra_fields": ["worker_id", "timing"]}}},
        },
        response=ChatCompletion, stream=ChatCompletionChunk, errors=GENERATION_ERRORS),
    Operation(
        "POST", "/v1/completions", "Create a text completion", tag="completions", operation_id="createCompletion",
        description="Continues `prompt` (a string, token ids, or a batch: a list of strings or of token-id "
                    "lists) and answers one `text_completion` object, or with `stream: true` server-sent events of "
                    "`text_completion` objects ending with `data: [DONE]`. Each prompt gets `n` choices, numbered "
                    "prompt_index * n + choice_index. `logprobs: N`, `echo`, `guided_*` and `nvext` as on chat; "
                    "`suffix` and `best_of` > 1 are a 400. Unknown fields are ignored.",
        request=CompletionRequest,
        request_examples={
            "text": {"summary": "A string prompt",
                     "value": {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 30}},
            "tokens": {"summary": "A token-id prompt",
                       "value": {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 5}},
            "batch": {"summary": "Two prompts, two choices each, with logprobs",
                      "value": {"model": "tiny", "prompt": ["Once upon a time", "The harbor"], "n": 2,
                                "max_tokens": 8, "logprobs": 2, "seed": 7}},
        },
        response=Completion, stream=Completion, errors=GENERATION_ERRORS),
    Operation(
        "POST", "/v1/responses", "Create a model response", tag="responses", operation_id="createResponse",
        description="OpenAI's Responses API, served on top of chat: `input` as a string or items (messages, "
                    "function_call and function_call_output items), function tools, `previous_response_id` "
                    "(stored responses). With `stream: true`: server-sent events `event: <type>` / "
                    "`data: <event JSON>` in OpenAI's order, from `response.created` to `response.completed`. "
                    "`GET` and `DELETE /v1/responses/{id}` read and delete a stored response.",
        request=ResponsesRequest,
        request_examples={"hello": {"summary": "A string input",
                                    "value": {"model": "tiny", "input": "Hello!", "max_output_tokens": 30}}},
        response=ResponseObject, stream=ResponseStreamEvent, errors=GENERATION_ERRORS),
    Operation(
        "POST", "/v1/messages", "Create a message (Anthropic)", tag="anthropic", operation_id="createMessage",
        description="Anthropic's Messages API, served on top of chat: content blocks (text, image, tool_use, "
                    "tool_result, thinking), tools, `thinking`. With `stream: true`: Anthropic's events from "
                    "`message_start` to `message_stop`. Errors are Anthropic's `{\"type\": \"error\", "
                    "\"error\": {\"type\", \"message\"}}`.",
        request=MessagesRequest,
        request_examples={"hello": {"summary": "A short answer",
                                    "value": {"model": "tiny", "max_tokens": 30, "messages": _HELLO}}},
        response=AnthropicMessage, stream=AnthropicStreamEvent, errors=(400, 404, 413, 500),
        error_schema=AnthropicErrorBody,
        responses={529: ("Overloaded: no live worker or too many requests.", AnthropicErrorBody)}),
    Operation(
        "POST", "/v1/messages/count_tokens", "Count the tokens of a message request (Anthropic)", tag="anthropic",
        operation_id="countMessageTokens",
        description="The prompt length in tokens as the model's chat template renders the request.",
        request=CountTokensRequest,
        request_examples={"hello": {"summary": "A short conversation", "value": {"model": "tiny",
                                                                                   "messages": _HELLO}}},
        response=TokenCount, errors=(400, 404, 413, 500), error_schema=AnthropicErrorBody),
    Operation(
        "POST", "/v1/embeddings", "Create embeddings", tag="embeddings", operation_id="createEmbedding",
        description="Vectors of `input` (a string, strings, token ids or token-id lists) from a model of type "
                    "`embedding`; a batch is split across the model's workers. `encoding_format: base64` gives "
                    "little-endian float32 bytes; `dimensions` keeps the first N dimensions, normalized again.",
        request=EmbeddingRequest,
        request_examples={"text": {"summary": "Two sentences",
                                   "value": {"model": "tiny-embed", "input": ["A cat sat.", "A dog ran."]}}},
        response=EmbeddingResponse, errors=GENERATION_ERRORS),
    Operation(
        "POST", "/v1/images/generations", "Create images", tag="images", operation_id="createImage",
        description="OpenAI's image generation request plus `nvext` (negative_prompt, num_inference_steps, "
                    "guidance_scale, seed) for a model of type `images`. `response_format: url` answers URLs "
                    "of `GET /v1/media/{name}`, kept for `--media-store-ttl-s`.",
        request=ImageGenerationRequest,
        request_examples={"png": {"summary": "A small PNG as base64",
                                  "value": {"model": "tiny-image", "prompt": "A red kite over a beach",
                                            "size": "128x128", "response_format": "b64_json",
                                            "nvext": {"seed": 42}}}},
        response=ImagesResponse, errors=GENERATION_ERRORS),
    *(Operation(
        "POST", path, "Create a video" + alias, tag="videos", operation_id=op_id,
        description="Dynamo's video request (prompt, seconds, size, response_format, output_format, `nvext` "
                    "fps / num_frames / seed / negative_prompt / num_inference_steps / guidance_scale) for a "
                    "model of type `videos`; answers when the video is made. `output_format` is a hint: "
                    "`data[].output_format` says what was made (the mock makes mp4 when an ffmpeg is "
                    "installed, else animated WebP or GIF).",
        request=VideoGenerationRequest, request_examples={"short": {"summary": "One second", "value": _VIDEO}},
        response=VideoResponse, errors=GENERATION_ERRORS)
      for path, op_id, alias in (("/v1/videos", "createVideo", ""),
                                 ("/v1/videos/generations", "createVideoGeneration", " (alias of /v1/videos)"))),
    *(Operation(
        "POST", path, "Stream a video as MJPEG" + alias, tag="videos", operation_id=op_id,
        description="The request of `/v1/videos`; the answer is `multipart/x-mixed-replace; boundary=frame` "
                    "with one `image/jpeg` part per frame, sent as the worker makes it, ending with "
                    "`--frame--`. Leaving early aborts the generation.",
        request=VideoGenerationRequest, request_examples={"short": {"summary": "One second", "value": _VIDEO}},
        response_content_type="multipart/x-mixed-replace; boundary=frame", errors=GENERATION_ERRORS)
      for path, op_id, alias in (("/v1/videos/stream", "streamVideo", ""),
                                 ("/v1/videos/generations/stream", "streamVideoGeneration",
                                  " (alias of /v1/videos/stream)"))),
    Operation(
        "GET", "/v1/media/{name}", "A generated image or video", tag="images", operation_id="getMedia",
        description="A file an image or video request answered by URL; 404 once it expired or newer files "
                    "pushed it out of the bounded store.",
        parameters=(_MEDIA_NAME,), response_content_type="*/*",
        responses={404: ("No such file (expired, or never stored here).", ErrorResponse)}),
    Operation(
        "POST", "/tokenize", "Tokenize a prompt or a conversation", tag="tokenize", operation_id="tokenize",
        description="vLLM's shape: `{model, prompt}` (special tokens added unless `add_special_tokens: false`) "
                    "or `{model, messages}` (rendered with the chat template as a chat request is) -> "
                    "`{count, max_model_len, tokens}`, plus `token_strs` with `return_token_strs`. `model` may "
                    "be left out when one model has a tokenizer.",
        request=TokenizeRequest,
        request_examples={"prompt": {"summary": "Plain text", "value": {"model": "tiny", "prompt": "Hello!"}},
                          "messages": {"summary": "A conversation", "value": {"model": "tiny",
                                                                              "messages": _HELLO}}},
        response=TokenizeResponse, errors=(400, 404, 413, 500, 503)),
    Operation(
        "POST", "/detokenize", "Detokenize token ids", tag="tokenize", operation_id="detokenize",
        description="`{model, tokens}` -> `{prompt}`, special tokens kept.",
        request=DetokenizeRequest,
        request_examples={"tokens": {"summary": "A few ids", "value": {"model": "tiny", "tokens": [1, 2, 3]}}},
        response=DetokenizeResponse, errors=(400, 404, 413, 500)),
    Operation(
        "GET", "/v1/models", "List the served models", tag="models", operation_id="listModels",
        description="Models with at least one live worker instance.",
        response=ModelList, errors=INFO_ERRORS),
    Operation(
        "GET", "/health", "Health and worker instances", tag="service", operation_id="getHealth",
        description="200 with the live worker instances, their load and the KV index state; 503 while there "
                    "is no live worker.",
        response=HealthReport, response_description="At least one worker instance is live.",
        responses={503: ("No worker instance is live.", HealthUnavailable)}, errors=INFO_ERRORS),
    Operation(
        "GET", "/live", "Liveness", tag="service", operation_id="getLive",
        description="200 while the process runs, whether or not workers are registered.", response=LiveStatus),
    Operation(
        "GET", "/metrics", "Prometheus metrics", tag="service", operation_id="getMetrics",
        description="Prometheus text exposition format: every serving process's request metrics plus live "
                    "per-worker router and KV-index gauges.",
        response_content_type="text/plain; version=0.0.4; charset=utf-8", errors=INFO_ERRORS),
    Operation(
        "GET", "/openapi.json", "This OpenAPI document", tag="service", operation_id="getOpenAPI",
        response=dict[str, Any]),
    Operation(
        "GET", "/docs", "Swagger UI for this document", tag="service", operation_id="getDocs",
        response_content_type="text/html; charset=utf-8"),
)

# ---- spec generation -------------------------------------------------------------------------------------

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{name}"


def build_spec(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` as a dict."""
    types: list[Any] = []  # every type whose schema an operation refers to, in a fixed order

    def use(tp: Any) -> int:
        types.append(tp)
        return len(types) - 1

    planned = []
    for op in operations:
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
                "description": f"With `stream: true`: server-sent events, each `data: <{name} JSON>` followed "
                               "by a blank line, and `data: [DONE]` last. An error after the stream started "
                               "comes as one `data: <ErrorResponse JSON>` event.",
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
        error_responses[name] = entry

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "dynamo-py-frontend",
            "version": __version__,
            "summary": "OpenAI-compatible API gateway for LLM inference workers.",
            "description": "Errors are OpenAI's `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`. "
                           "Besides OpenAI's request fields the frontend accepts vLLM-style sampling fields "
                           "(`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`, `min_tokens`, ...).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "This server"}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {"schemas": components, "responses": error_responses},
    }


@functools.cache
def spec_bytes() -> bytes:
    """The spec as JSON bytes, built on first use."""
    return msgspec.json.encode(build_spec())


# ---- handlers ----------------------------------------------------------------------------------------------

_NO_CACHE = ("cache-control", "no-cache")
_NOSNIFF = ("x-content-type-options", "nosniff")
_IMMUTABLE = ("cache-control", "public, max-age=31536000, immutable")
# The page loads only its own assets; "Try it out" fetches only from this origin.
_DOCS_CSP = ("content-security-policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                        "script-src 'self'; connect-src 'self'; object-src 'none'; "
                                        "frame-ancestors 'self'; base-uri 'self'")


def openapi_json(gateway, proto) -> None:
    proto.response_bytes(200, [("content-type", "application/json"), _NO_CACHE, _NOSNIFF], spec_bytes())


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


def _routes() -> tuple[dict[str, Callable[[Any, Any], None]], frozenset[str]]:
    assets = {ASSETS_PATH + name: _asset_handler(name) for name in ASSET_TYPES}
    unlisted = {"/docs/": docs_slash, "/docs/swagger-initializer.js": _initializer, **assets}
    return {"/openapi.json": openapi_json, "/docs": docs, **unlisted}, frozenset(unlisted)


GET_ROUTES, UNLISTED_ROUTES = _routes()
"""``GET_ROUTES`` goes into ``app.GET_ROUTES``; ``UNLISTED_ROUTES`` (Swagger UI's assets) are not in the spec."""
