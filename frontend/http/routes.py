"""Every endpoint the HTTP app serves, in one table: how it is dispatched and how ``/openapi.json`` describes it.

``app.py`` dispatches from :data:`ROUTES` (exact paths by method, parameter routes by prefix, metrics labels,
error renderers); ``openapi.py`` builds the spec from the same table. ``route.py`` says how to add a route.
"""

from __future__ import annotations

from ..protocol.anthropic import (CountTokensRequest, ErrorBody as AnthropicErrorBody, Message as AnthropicMessage,
                                  MessagesRequest, StreamEvent as AnthropicStreamEvent, TokenCount)
from ..protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from ..protocol.media import ImageGenerationRequest, ImagesResponse, VideoGenerationRequest, VideoResponse
from ..protocol.openai import (ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion,
                               CompletionRequest, ErrorResponse, ModelEntry, ModelList)
from ..protocol.responses import ResponseObject, ResponsesRequest, ResponseStreamEvent
from ..protocol.tokenize_api import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from . import (admin, anthropic, chat, completions, embeddings, images, info, media, openapi, responses_api, tokenize,
               videos)
from .openapi import GENERATION_ERRORS, INFO_ERRORS, HealthReport, HealthUnavailable, LiveStatus
from .route import Route

_HELLO = [{"role": "user", "content": "Hello!"}]
_VIDEO = {"model": "tiny-video", "prompt": "A paper boat on a pond", "seconds": 1, "size": "160x96",
          "nvext": {"fps": 8, "seed": 7}}
_MEDIA_NAME = {"name": "name", "in": "path", "required": True, "description": "The file name in the URL the "
               "image or video endpoint answered.", "schema": {"type": "string"}}
_MODEL_NAME = {"name": "model", "in": "path", "required": True, "description": "The model's name, percent-encoded "
               "or not; it may contain `/` (`Qwen/Qwen3-0.6B`).", "schema": {"type": "string"},
               "example": "tiny"}

API_ROUTES: tuple[Route, ...] = (
    Route(
        "POST", "/v1/chat/completions", "Create a chat completion", tag="chat", operation_id="createChatCompletion",
        handler=chat.handle, label="chat_completions",
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
    Route(
        "POST", "/v1/completions", "Create a text completion", tag="completions", operation_id="createCompletion",
        handler=completions.handle, label="completions",
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
    Route(
        "POST", "/v1/responses", "Create a model response", tag="responses", operation_id="createResponse",
        handler=responses_api.create, label="responses",
        description="OpenAI's Responses API, served on top of chat: `input` as a string or items (messages, "
                    "function_call and function_call_output items), function tools, `previous_response_id` "
                    "(stored responses). With `stream: true`: server-sent events `event: <type>` / "
                    "`data: <event JSON>` in OpenAI's order, from `response.created` to `response.completed`. "
                    "`GET` and `DELETE /v1/responses/{id}` read and delete a stored response.",
        request=ResponsesRequest,
        request_examples={"hello": {"summary": "A string input",
                                    "value": {"model": "tiny", "input": "Hello!", "max_output_tokens": 30}}},
        response=ResponseObject, stream=ResponseStreamEvent, errors=GENERATION_ERRORS,
        stream_description="With `stream: true`: server-sent events, each `event: <type>` and `data: "
                           "<ResponseStreamEvent JSON>` followed by a blank line, from `response.created` to "
                           "`response.completed` (or `response.incomplete`); no `[DONE]`. An error after the "
                           "stream started ends it with `response.failed`, whose `response.error` says why."),
    Route(
        "POST", "/v1/messages", "Create a message (Anthropic)", tag="anthropic", operation_id="createMessage",
        handler=anthropic.messages, label="messages", render_error=anthropic.send_error, auth="anthropic",
        description="Anthropic's Messages API, served on top of chat: content blocks (text, image, tool_use, "
                    "tool_result, thinking), tools, `thinking`. With `stream: true`: Anthropic's events from "
                    "`message_start` to `message_stop`. Errors are Anthropic's `{\"type\": \"error\", "
                    "\"error\": {\"type\", \"message\"}}`.",
        request=MessagesRequest,
        request_examples={"hello": {"summary": "A short answer",
                                    "value": {"model": "tiny", "max_tokens": 30, "messages": _HELLO}}},
        response=AnthropicMessage, stream=AnthropicStreamEvent, errors=(400, 401, 404, 413, 500),
        stream_description="With `stream: true`: server-sent events, each `event: <type>` and `data: <event "
                           "JSON>` followed by a blank line, from `message_start` to `message_stop`; no `[DONE]`. "
                           "An error after the stream started ends it with one `event: error` (`ErrorBody`).",
        error_schema=AnthropicErrorBody,
        responses={529: ("Overloaded: no live worker or too many requests.", AnthropicErrorBody)}),
    Route(
        "POST", "/v1/messages/count_tokens", "Count the tokens of a message request (Anthropic)", tag="anthropic",
        operation_id="countMessageTokens",
        handler=anthropic.count_tokens, label="messages_count_tokens", render_error=anthropic.send_error,
        auth="anthropic",
        description="The prompt length in tokens as the model's chat template renders the request.",
        request=CountTokensRequest,
        request_examples={"hello": {"summary": "A short conversation", "value": {"model": "tiny",
                                                                                   "messages": _HELLO}}},
        response=TokenCount, errors=(400, 401, 404, 413, 500), error_schema=AnthropicErrorBody),
    Route(
        "POST", "/v1/embeddings", "Create embeddings", tag="embeddings", operation_id="createEmbedding",
        handler=embeddings.handle, label="embeddings",
        description="Vectors of `input` (a string, strings, token ids or token-id lists) from a model of type "
                    "`embedding`; a batch is split across the model's workers. `encoding_format: base64` gives "
                    "little-endian float32 bytes; `dimensions` keeps the first N dimensions, normalized again.",
        request=EmbeddingRequest,
        request_examples={"text": {"summary": "Two sentences",
                                   "value": {"model": "tiny-embed", "input": ["A cat sat.", "A dog ran."]}}},
        response=EmbeddingResponse, errors=GENERATION_ERRORS),
    Route(
        "POST", "/v1/images/generations", "Create images", tag="images", operation_id="createImage",
        handler=images.handle, label="images",
        description="OpenAI's image generation request plus `nvext` (negative_prompt, num_inference_steps, "
                    "guidance_scale, seed) for a model of type `images`. `response_format: url` answers URLs "
                    "of `GET /v1/media/{name}`, kept for `--media-store-ttl-s`.",
        request=ImageGenerationRequest,
        request_examples={"png": {"summary": "A small PNG as base64",
                                  "value": {"model": "tiny-image", "prompt": "A red kite over a beach",
                                            "size": "128x128", "response_format": "b64_json",
                                            "nvext": {"seed": 42}}}},
        response=ImagesResponse, errors=GENERATION_ERRORS),
    *(Route(
        "POST", path, "Create a video" + alias, tag="videos", operation_id=op_id, handler=videos.generate,
        label="videos",
        description="Dynamo's video request (prompt, seconds, size, response_format, output_format, `nvext` "
                    "fps / num_frames / seed / negative_prompt / num_inference_steps / guidance_scale) for a "
                    "model of type `videos`; answers when the video is made. `output_format` is a hint: "
                    "`data[].output_format` says what was made (the mock makes mp4 when an ffmpeg is "
                    "installed, else animated WebP or GIF).",
        request=VideoGenerationRequest, request_examples={"short": {"summary": "One second", "value": _VIDEO}},
        response=VideoResponse, errors=GENERATION_ERRORS)
      for path, op_id, alias in (("/v1/videos", "createVideo", ""),
                                 ("/v1/videos/generations", "createVideoGeneration", " (alias of /v1/videos)"))),
    *(Route(
        "POST", path, "Stream a video as MJPEG" + alias, tag="videos", operation_id=op_id, handler=videos.stream,
        label="videos_stream",
        description="The request of `/v1/videos`; the answer is `multipart/x-mixed-replace; boundary=frame` "
                    "with one `image/jpeg` part per frame, sent as the worker makes it, ending with "
                    "`--frame--`. Leaving early aborts the generation.",
        request=VideoGenerationRequest, request_examples={"short": {"summary": "One second", "value": _VIDEO}},
        response_content_type="multipart/x-mixed-replace; boundary=frame", errors=GENERATION_ERRORS)
      for path, op_id, alias in (("/v1/videos/stream", "streamVideo", ""),
                                 ("/v1/videos/generations/stream", "streamVideoGeneration",
                                  " (alias of /v1/videos/stream)"))),
    Route(
        "GET", "/v1/media/{name}", "A generated image or video", tag="images", operation_id="getMedia",
        prefix=media.PREFIX,
        handler=media.serve, label="media",
        description="A file an image or video request answered by URL; 404 once it expired or newer files "
                    "pushed it out of the bounded store.",
        parameters=(_MEDIA_NAME,), response_content_type="*/*", errors=(401,),
        responses={404: ("No such file (expired, or never stored here).", ErrorResponse)}),
    Route(
        "POST", "/tokenize", "Tokenize a prompt or a conversation", tag="tokenize", operation_id="tokenize",
        handler=tokenize.tokenize, label="tokenize",
        description="vLLM's shape: `{model, prompt}` (special tokens added unless `add_special_tokens: false`) "
                    "or `{model, messages}` (rendered with the chat template as a chat request is) -> "
                    "`{count, max_model_len, tokens}`, plus `token_strs` with `return_token_strs`. `model` may "
                    "be left out when one model has a tokenizer.",
        request=TokenizeRequest,
        request_examples={"prompt": {"summary": "Plain text", "value": {"model": "tiny", "prompt": "Hello!"}},
                          "messages": {"summary": "A conversation", "value": {"model": "tiny",
                                                                              "messages": _HELLO}}},
        response=TokenizeResponse, errors=(400, 401, 404, 413, 500, 503)),
    Route(
        "POST", "/detokenize", "Detokenize token ids", tag="tokenize", operation_id="detokenize",
        handler=tokenize.detokenize, label="detokenize",
        description="`{model, tokens}` -> `{prompt}`, special tokens kept.",
        request=DetokenizeRequest,
        request_examples={"tokens": {"summary": "A few ids", "value": {"model": "tiny", "tokens": [1, 2, 3]}}},
        response=DetokenizeResponse, errors=(400, 401, 404, 413, 500)),
    Route(
        "GET", "/v1/models", "List the served models", tag="models", operation_id="listModels",
        handler=info.models,
        description="Models with at least one live worker instance.",
        response=ModelList, errors=(401, *INFO_ERRORS)),
    Route(
        "GET", "/v1/models/{model}", "Retrieve a model", tag="models", operation_id="retrieveModel",
        prefix=info.MODEL_PREFIX, handler=info.retrieve_model,
        description="OpenAI's model object (the model's entry of `GET /v1/models`) of a model with at least one "
                    "live worker instance.",
        parameters=(_MODEL_NAME,), response=ModelEntry, errors=(401, *INFO_ERRORS),
        responses={404: ("No live worker instance serves the model.", ErrorResponse)}),
    Route(
        "GET", "/health", "Health and worker instances", tag="service", operation_id="getHealth",
        handler=info.health,
        description="200 with the live worker instances, their load and the KV index state; 503 while there "
                    "is no live worker, and once the server is shutting down (`status: shutting_down`).",
        response=HealthReport, response_description="At least one worker instance is live.",
        responses={503: ("No worker instance is live, or the server is shutting down.", HealthUnavailable)},
        errors=INFO_ERRORS),
    Route(
        "GET", "/live", "Liveness", tag="service", operation_id="getLive",
        handler=info.live,
        description="200 while the process runs, whether or not workers are registered; 503 once the server is "
                    "shutting down (SIGTERM: it finishes the requests in flight and takes no new ones).",
        response=LiveStatus, responses={503: ("The server is shutting down.", LiveStatus)}),
    Route(
        "GET", "/metrics", "Prometheus metrics", tag="service", operation_id="getMetrics",
        handler=info.metrics,
        description="Prometheus text exposition format: every serving process's request metrics plus live "
                    "per-worker router and KV-index gauges.",
        response_content_type="text/plain; version=0.0.4; charset=utf-8", errors=INFO_ERRORS),
    Route("ANY", responses_api.ITEM_PREFIX + "{id}", handler=responses_api.item, label="responses_item",
          prefix=responses_api.ITEM_PREFIX),  # GET, DELETE /v1/responses/{id}: not in the spec
    Route(
        "GET", "/busy_threshold", "Busy thresholds of every model", tag="admin", operation_id="listBusyThresholds",
        handler=admin.list_thresholds,
        description="Admin API (off with DYN_DISABLE_FRONTEND_ADMIN_API): each served model's busy thresholds; "
                    "a worker over one gets no new requests, and a request whose workers are all busy is refused "
                    "with --overload-status-code (529 by default). 0 = that check is off.",
        response=admin.ThresholdList, errors=(401, 404)),
    Route(
        "POST", "/busy_threshold", "Change a model's busy thresholds", tag="admin",
        operation_id="updateBusyThresholds", handler=admin.update_thresholds, label="busy_threshold",
        description="Admin API: sets the given thresholds of `model` in every HTTP process (a field left out "
                    "keeps its value; null or 0 turns the check off) and answers the model's thresholds.",
        request=admin.BusyThresholdUpdate,
        request_examples={"decode": {"summary": "Busy above 90 % of the KV blocks",
                                     "value": {"model": "tiny", "active_decode_blocks_threshold": 0.9}}},
        response=admin.ModelThresholds, errors=(400, 401, 404)),
)


ROUTES: tuple[Route, ...] = API_ROUTES + openapi.document_routes(API_ROUTES)


def spec_bytes() -> bytes:
    """The OpenAPI document of every route, as JSON bytes (built once)."""
    return openapi.spec_bytes(ROUTES)
