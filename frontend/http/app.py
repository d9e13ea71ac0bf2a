"""The Granian RSGI application: routing, API keys, body limits, concurrency limit and error rendering.

Granian imports ``frontend.http.app:app`` in each worker process and calls ``__rsgi_init__(loop)`` once,
where the per-process :class:`~frontend.gateway.state.Gateway` is built from the settings the daemon put in the
``FRONTEND_GATEWAY_SETTINGS`` environment variable (JSON of ``GatewaySettings``; set by the daemon only).
With API keys configured, every request outside ``--api-key-exempt`` is checked first (``auth.py``), before the
route's method, the body or the concurrency limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import msgspec
from granian.rsgi import ProtocolClosed

from ..gateway.auth import ApiKeys
from ..gateway.settings import SETTINGS_ENV, GatewaySettings
from ..gateway.state import Gateway
from ..observability.logs import REQUEST_ID, setup_logging
from ..protocol.errors import MethodNotAllowed, NotFoundRoute, PayloadTooLarge, RequestError
from ..transport.process import (batch_schedule_helper_threads, die_with_parent, set_process_title,
                                 tune_garbage_collector)
from .auth import authenticate
from .reply import internal_error, send_error
from .route import Route
from .routes import ROUTES

log = logging.getLogger(__name__)

POST_ROUTES: dict[str, Route] = {route.path: route for route in ROUTES if route.method == "POST"}
GET_ROUTES: dict[str, Route] = {route.path: route for route in ROUTES if route.method == "GET" and not route.prefix}
PREFIX_ROUTES: dict[str, Route] = {route.prefix: route for route in ROUTES if route.prefix}


def route_of(path: str, method: str) -> Route | None:
    """The route serving ``method path``: an exact path, else a path with a parameter (any method)."""
    route = (POST_ROUTES if method == "POST" else GET_ROUTES if method in ("GET", "HEAD") else {}).get(path)
    if route is not None:
        return route
    for prefix, route in PREFIX_ROUTES.items():
        if path.startswith(prefix) and len(path) > len(prefix):
            return route
    return None


ERROR_RENDERERS = {route.path: route.render_error for route in ROUTES if route.render_error}  # other APIs' shapes
AUTH_OF_PATH = {route.path: route.auth for route in ROUTES}  # for a path served with another method (405)


def of_path(table: dict[str, Any], path: str, default: Any) -> Any:
    """``table``'s entry for ``path``, else for the route path it is under, so that a path beside an API's
    endpoints gets that API's error shape and key headers (``/v1/messages/batches``: Anthropic's)."""
    value = table.get(path)
    if value is None:
        value = next((entry for base, entry in table.items() if path.startswith(base + "/")), default)
    return value


class GatewayApp:
    """RSGI entry points; one instance per Granian worker process."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.api_keys: ApiKeys | None = None  # None: no key configured, no check
        self._threads_pending = False  # --io-thread-sched-batch: Granian's threads start after __rsgi_init__

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # SIGKILL, not SIGTERM: Granian's worker runtime takes SIGTERM as "wait for the main process to say
        # stop", which never comes once the daemon (Granian's main process) is gone.
        die_with_parent(signal.SIGKILL)
        settings = msgspec.json.decode(os.environ[SETTINGS_ENV], type=GatewaySettings)
        setup_logging(settings.log_level, "http", settings.log_format)
        set_process_title("dyn-http")
        self.gateway = Gateway(loop, settings)
        self.api_keys = settings.api_keys if settings.api_keys.enabled else None
        self._threads_pending = settings.io_thread_sched_batch
        tune_garbage_collector()
        with open(os.path.join(settings.http_ready_dir, str(os.getpid())), "w"):
            pass  # the daemon tells systemd READY=1 once every worker got here

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.gateway is not None:
            self.gateway.close()

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":
            return
        if self._threads_pending:  # the first request: Granian's runtime thread, which brought it, now exists
            self._threads_pending = False
            log.debug("helper threads under SCHED_BATCH", extra={"threads": batch_schedule_helper_threads()})
        gateway = self.gateway
        try:
            route = route_of(scope.path, scope.method)
            keys = self.api_keys
            if keys is not None and not keys.is_exempt(scope.path):
                authenticate(keys, scope.headers, route.auth if route else of_path(AUTH_OF_PATH, scope.path, "openai"))
            if route is None:
                raise self._no_route(scope)
            if route.method == "GET" and not route.prefix:
                reply = route.handler(gateway, proto)
                if reply is not None:
                    await reply  # /metrics asks the other processes
            elif not route.label:  # a parameter route outside admission and the request metrics
                route.handler(gateway, scope, proto)
            elif gateway.tracing is None:
                await self._post(gateway, scope, proto, route)
            else:  # one trace per request, child of the client's traceparent (observability/tracing.py)
                with gateway.tracing.request(scope.method, route.path, scope.headers):
                    await self._post(gateway, scope, proto, route)
        except RequestError as error:
            of_path(ERROR_RENDERERS, scope.path, send_error)(proto, error)
        except Exception as exc:
            of_path(ERROR_RENDERERS, scope.path, send_error)(proto, internal_error(exc))

    async def _post(self, gateway: Gateway, scope, proto, route: Route) -> None:
        with gateway.admitted(route.label) as record:
            REQUEST_ID.set(scope.headers.get("x-request-id") or gateway.new_request_id())
            try:
                body = await self._read_body(scope, proto, gateway.settings.body_limit_bytes)
            except ProtocolClosed:  # the client hung up mid-body: a disconnect, nothing to answer
                record.error_type = "cancelled"
                log.info("client disconnected while sending its body", extra={"path": scope.path})
                return
            await route.handler(gateway, scope, proto, body)

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
