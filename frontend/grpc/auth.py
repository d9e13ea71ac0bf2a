"""The API-key check of the gRPC front door: a server interceptor, installed only when keys are configured.

The keys are the HTTP ones (``GatewaySettings.api_keys``, digests only; see ``gateway/auth.py``), presented in
the call's metadata as ``authorization: Bearer <key>`` or ``x-api-key: <key>``. A call without a configured key
ends with UNAUTHENTICATED before its handler runs (the request message is not even looked at). The health RPCs
(ServerLive, ServerReady, ModelReady) stay open, as ``/live`` and ``/health`` do on HTTP, so that probes and
``tritonclient``'s readiness checks need no key.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import grpc

from ..gateway.auth import ApiKeys, bearer_token

SERVICE = "/inference.GRPCInferenceService/"
OPEN_METHODS = frozenset(SERVICE + name for name in ("ServerLive", "ServerReady", "ModelReady"))
MISSING = "missing API key: send metadata `authorization: Bearer <key>` or `x-api-key: <key>`"
WRONG = "incorrect API key provided"


def presented_keys(metadata: Any) -> tuple[str | None, str | None]:
    """(Bearer token, x-api-key) of a call's invocation metadata (pairs of key and value)."""
    bearer = api_key = None
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue  # a binary (-bin) entry
        if key == "authorization" and bearer is None:
            bearer = bearer_token(value)
        elif key == "x-api-key" and api_key is None:
            api_key = value
    return bearer, api_key


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through when its metadata carries a configured key (or it is a health RPC)."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in OPEN_METHODS:
            return handler
        presented = presented_keys(handler_call_details.invocation_metadata)
        accepted = False
        for key in presented:
            accepted |= self.keys.accepts(key)  # both checked: no early exit
        if accepted:
            return handler
        return _denied(handler, WRONG if any(presented) else MISSING)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call with UNAUTHENTICATED."""

    async def deny(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **codecs)
    return grpc.unary_unary_rpc_method_handler(deny, **codecs)
