"""The gateway side of the tokenizer pool: one DEALER connected to every pool process.

ZeroMQ round-robins requests over the connected pool processes; replies are matched to waiting requests
by ``request_id``.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import msgspec
import zmq

from ..observability.metrics import Metrics
from ..protocol import tokenizer as wire
from ..protocol.errors import ServiceUnavailable, TemplateError
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer

TOKENIZE_TIMEOUT_S = 30.0


class TokenizerClient:
    """Sends prompts to the pool and awaits token ids."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, endpoints: list[str],
                 metrics: Metrics | None = None) -> None:
        sock = open_socket(context, zmq.DEALER, connect=endpoints)
        self.loop = loop
        self._drainer = SocketDrainer(loop, sock, self._on_reply)
        self._sock = sock
        self._ids = itertools.count()
        self._metrics = metrics
        self._waiting: dict[int, asyncio.Future[wire.TokenizeResult]] = {}

    async def tokenize(self, model_path: str, kind: str, body: bytes, block_size: int) -> tuple[list[int], bytes]:
        """Token ids and block hashes of the request's prompt; TemplateError (400) when it cannot be rendered."""
        request_id = next(self._ids)
        started = time.perf_counter()
        future = self.loop.create_future()
        self._waiting[request_id] = future
        self._sock.send(wire.encoder.encode(wire.TokenizeRequest(request_id, model_path, kind, body, block_size)))
        self._drainer.after_send()
        try:
            result = await asyncio.wait_for(future, TOKENIZE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ServiceUnavailable("the tokenizer pool did not answer in time") from None
        finally:
            self._waiting.pop(request_id, None)
        if self._metrics is not None:
            self._metrics.observe("tokenizer_latency_ms", (("operation", "tokenize"),),
                                  (time.perf_counter() - started) * 1000)
        if result.error is not None:
            raise TemplateError(result.error)
        return result.token_ids, result.block_hashes

    def _on_reply(self, frames: list[bytes]) -> None:
        try:
            result = wire.result_decoder.decode(frames[-1])
        except msgspec.DecodeError:
            return
        future = self._waiting.get(result.request_id)
        if future is not None and not future.done():
            future.set_result(result)

    def close(self) -> None:
        self._drainer.close()
