"""The ``inference.GRPCInferenceService`` RPCs over one process's :class:`~frontend.gateway.state.Gateway`.

Errors become gRPC status codes from their HTTP status: 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404
NOT_FOUND, 413 RESOURCE_EXHAUSTED, 502 and 503 UNAVAILABLE (gRPC's own HTTP mapping), anything else INTERNAL.
API keys are checked before any of these, by ``auth.ApiKeyInterceptor``. Inside
ModelStreamInfer errors are ``error_message`` responses instead (see ``stream.py``).
"""

from __future__ import annotations

import functools
import logging
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from ..gateway.state import Gateway
from ..protocol.errors import RequestError
from . import metadata
from .inference import folded, start
from .proto import kserve_pb2 as pb
from .proto.kserve_pb2_grpc import GRPCInferenceServiceServicer
from .stream import StreamSession

log = logging.getLogger(__name__)

ENDPOINT = "grpc_model_infer"  # metrics label

_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
           404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED, 502: grpc.StatusCode.UNAVAILABLE,
           503: grpc.StatusCode.UNAVAILABLE}


def status_code(error: RequestError) -> grpc.StatusCode:
    return _STATUS.get(error.status, grpc.StatusCode.INTERNAL)


def _with_status(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Turn a unary handler's RequestError into its status code, and a bug into INTERNAL (logged)."""

    @functools.wraps(handler)
    async def wrapper(self: "KServeService", request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except RequestError as error:
            await context.abort(status_code(error), error.message)
        except Exception:
            log.exception("unhandled error", extra={"rpc": handler.__name__})
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")

    return wrapper


def _headers(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """The call's metadata (``x-worker-instance-id`` pins a worker, as the HTTP header does)."""
    return dict(context.invocation_metadata() or ())


class KServeService(GRPCInferenceServiceServicer):
    """KServe v2 health, metadata and inference, plus Triton's ModelConfig and ModelStreamInfer."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=metadata.server_ready(self.gateway))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=metadata.model_ready(self.gateway, request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return metadata.server_metadata()

    @_with_status
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return metadata.model_metadata(metadata.exposed_model(self.gateway, request.name, request.version))

    @_with_status
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return metadata.model_config(metadata.exposed_model(self.gateway, request.name, request.version))

    @_with_status
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        with self.gateway.admitted(ENDPOINT):
            inference = await start(self.gateway, request, _headers(context), in_stream=False)
            async with inference.generation:
                return await folded(inference)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: Any) -> AsyncIterator[pb.ModelStreamInferResponse]:
        session = StreamSession(self.gateway, _headers(context))
        async with aclosing(session.responses(request_iterator)) as responses:
            async for response in responses:
                yield response
