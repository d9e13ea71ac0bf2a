"""The Granian RSGI application: routing, body limits, concurrency limit and error rendering.

Granian imports ``frontend.http.app:app`` in each worker process and calls ``__rsgi_init__(loop)`` once,
where the per-process :class:`~frontend.gateway.state.Gateway` is built from the settings the daemon put in the
``FRONTEND_GATEWAY_SETTINGS`` environment variable (JSON of ``GatewaySettings``; set by the daemon only).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Awaitable, Callable

import msgspec

from ..gateway.settings import SETTINGS_ENV, GatewaySettings
from ..gateway.state import Gateway
from ..observability.logs import REQUEST_ID, setup_logging
from ..protocol.errors import MethodNotAllowed, NotFoundRoute, PayloadTooLarge, RequestError
from ..transport.process import die_with_parent, set_process_title
from . import anthropic, chat, completions, embeddings, images, info, media, openapi, responses_api, tokenize, videos
from .reply import internal_error, send_error

log = logging.getLogger(__name__)


Handler = Callable[[Gateway, object, object, bytes], Awaitable[None]]
InfoHandler = Callable[[Gateway, object], Awaitable[None] | None]  # /metrics is async: it asks the other processes

POST_ROUTES: dict[str, Handler] = {
    "/v1/chat/completions": chat.handle,
    "/v1/completions": completions.handle,
    "/v1/responses": responses_api.create,
    "/v1/messages": anthropic.messages,
    "/v1/messages/count_tokens": anthropic.count_tokens,
    "/v1/embeddings": embeddings.handle,
    "/v1/images/generations": images.handle,
    "/v1/videos": videos.generate,
    "/v1/videos/generations": videos.generate,  # alias of /v1/videos
    "/v1/videos/stream": videos.stream,
    "/v1/videos/generations/stream": videos.stream,  # alias of /v1/videos/stream
    "/tokenize": tokenize.tokenize,
    "/detokenize": tokenize.detokenize,
}
# paths with a parameter: every method goes to the handler, which answers 405 itself
PREFIX_ROUTES: dict[str, Handler] = {
    responses_api.ITEM_PREFIX: responses_api.item,  # GET, DELETE /v1/responses/{id}
    media.PREFIX: media.serve,  # GET /v1/media/{name}
}
# paths whose errors have another shape than OpenAI's
ERROR_RENDERERS: dict[str, Callable[[object, RequestError], None]] = {
    "/v1/messages": anthropic.send_error,
    "/v1/messages/count_tokens": anthropic.send_error,
}
GET_ROUTES: dict[str, InfoHandler] = {
    "/v1/models": info.models,
    "/health": info.health,
    "/live": info.live,
    **openapi.GET_ROUTES,  # /openapi.json, /docs and Swagger UI's assets (frontend/http/openapi.py)
    "/metrics": info.metrics,
}
ENDPOINT_LABELS = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions",
                   "/v1/responses": "responses", responses_api.ITEM_PREFIX: "responses_item",
                   "/v1/messages": "messages", "/v1/messages/count_tokens": "messages_count_tokens",
                   "/v1/embeddings": "embeddings", "/v1/images/generations": "images", "/v1/videos": "videos",
                   "/v1/videos/generations": "videos", "/v1/videos/stream": "videos_stream",
                   "/v1/videos/generations/stream": "videos_stream", "/tokenize": "tokenize",
                   "/detokenize": "detokenize", media.PREFIX: "media"}


def prefix_route(path: str) -> tuple[str, Handler] | None:
    """The (prefix, handler) of a path with a parameter, if any."""
    for prefix, handler in PREFIX_ROUTES.items():
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix, handler
    return None


def endpoint_label(path: str) -> str:
    """The metrics label of a request path (a path with a parameter is labelled by its route)."""
    label = ENDPOINT_LABELS.get(path)
    if label is None:
        prefixed = prefix_route(path)
        label = ENDPOINT_LABELS[prefixed[0]] if prefixed is not None else path.strip("/").replace("/", "_")
    return label


class GatewayApp:
    """RSGI entry points; one instance per Granian worker process."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        die_with_parent()
        settings = msgspec.json.decode(os.environ[SETTINGS_ENV], type=GatewaySettings)
        setup_logging(settings.log_level, "http", settings.log_format)
        set_process_title("dyn-http")
        self.gateway = Gateway(loop, settings)
        with open(os.path.join(settings.http_ready_dir, str(os.getpid())), "w"):
            pass  # the daemon tells systemd READY=1 once every worker got here

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.gateway is not None:
            self.gateway.close()

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":
            return
        gateway = self.gateway
        try:
            prefixed = prefix_route(scope.path)
            if prefixed is not None:
                await self._post(gateway, scope, proto, prefixed[1])
            elif scope.method == "POST":
                handler = POST_ROUTES.get(scope.path)
                if handler is None:
                    raise self._no_route(scope)
                await self._post(gateway, scope, proto, handler)
            elif scope.method in ("GET", "HEAD"):
                info_handler = GET_ROUTES.get(scope.path)
                if info_handler is None:
                    raise self._no_route(scope)
                reply = info_handler(gateway, proto)
                if reply is not None:
                    await reply
            else:
                raise self._no_route(scope)
        except RequestError as error:
            ERROR_RENDERERS.get(scope.path, send_error)(proto, error)
        except Exception as exc:
            ERROR_RENDERERS.get(scope.path, send_error)(proto, internal_error(exc))

    async def _post(self, gateway: Gateway, scope, proto, handler: Handler) -> None:
        with gateway.admitted(endpoint_label(scope.path)):
            REQUEST_ID.set(scope.headers.get("x-request-id") or gateway.new_request_id())
            body = await self._read_body(scope, proto, gateway.settings.body_limit_bytes)
            await handler(gateway, scope, proto, body)

    @staticmethod
    async def _read_body(scope, proto, limit: int) -> bytes:
        length = scope.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(limit)
        if length is not None:
            return await proto()
        chunks, size = [], 0
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _no_route(scope) -> RequestError:
        if scope.path in POST_ROUTES or scope.path in GET_ROUTES:
            return MethodNotAllowed(f"method {scope.method} is not allowed on {scope.path}")
        return NotFoundRoute(f"no such endpoint: {scope.method} {scope.path}")


app = GatewayApp()
