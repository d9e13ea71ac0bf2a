"""ModelStreamInfer: one bidirectional stream carrying any number of requests, run concurrently.

Every request gets its own task; their responses go to one queue that the RPC writes out in the order they
were produced (clients tell requests apart by the echoed ``id``). A failing request answers with
``error_message`` and the stream goes on. The stream ends once the client closed its side and every
request finished; when the RPC is cancelled all running requests are cancelled, aborting their workers.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from typing import AsyncIterator, Mapping

from ..gateway.state import Gateway
from ..protocol.errors import RequestError
from .inference import folded, start, streamed
from .proto import kserve_pb2 as pb

log = logging.getLogger(__name__)

ENDPOINT = "grpc_model_stream_infer"  # metrics label


class StreamSession:
    """The requests and responses of one ModelStreamInfer call."""

    def __init__(self, gateway: Gateway, headers: Mapping[str, str]) -> None:
        self.gateway = gateway
        self.headers = headers
        self.queue: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self.tasks: set[asyncio.Task] = set()

    async def responses(self, requests: AsyncIterator[pb.ModelInferRequest]
                        ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """What the RPC writes: every response of every request, until all are done."""
        reader = asyncio.ensure_future(self._read(requests))
        try:
            while (item := await self.queue.get()) is not None:
                yield item
        finally:
            pending = [reader, *self.tasks]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[pb.ModelInferRequest]) -> None:
        try:
            async for request in requests:
                task = asyncio.ensure_future(self._run(request))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            await asyncio.gather(*self.tasks)
        finally:
            self.queue.put_nowait(None)

    async def _run(self, request: pb.ModelInferRequest) -> None:
        put = self.queue.put_nowait
        try:
            with self.gateway.admitted(ENDPOINT):
                inference = await start(self.gateway, request, self.headers, in_stream=True)
                async with inference.generation:
                    if inference.stream:
                        async with aclosing(streamed(inference)) as responses:
                            async for response in responses:
                                put(pb.ModelStreamInferResponse(infer_response=response))
                    else:
                        put(pb.ModelStreamInferResponse(infer_response=await folded(inference)))
        except RequestError as error:
            put(_error(request, error.message))
        except Exception:
            log.exception("stream request failed", extra={"model": request.model_name})
            put(_error(request, "internal server error"))


def _error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=message, infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id))
