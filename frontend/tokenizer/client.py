"""The gateway side of the tokenizer pool: one DEALER connected to every pool process.

ZeroMQ round-robins requests over the connected pool processes; replies are matched to waiting requests
by ``request_id``. A socket monitor watches the connections: when a pool process goes away (the daemon restarts
it), the requests still waiting are sent again (ZeroMQ drops what was queued for the dead peer, and a request
inside it is lost); tokenizing is idempotent, so a duplicate answer is simply ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import msgspec
import zmq
from zmq.utils.monitor import parse_monitor_message

from ..observability.metrics import Metrics
from ..protocol import tokenizer as wire
from ..protocol.errors import ServiceUnavailable, TemplateError
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer

TOKENIZE_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class TokenizerClient:
    """Sends prompts to the pool and awaits token ids."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, endpoints: list[str],
                 metrics: Metrics | None = None) -> None:
        sock = open_socket(context, zmq.DEALER)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        for endpoint in endpoints:
            sock.connect(endpoint)
        self.loop = loop
        self._drainer = SocketDrainer(loop, sock, self._on_reply)
        self._monitor = SocketDrainer(loop, monitor, self._on_disconnect)
        self._sock = sock
        self._ids = itertools.count()
        self._metrics = metrics
        self._waiting: dict[int, tuple[asyncio.Future[wire.TokenizeResult], bytes]] = {}

    async def tokenize(self, model_path: str, kind: str, body: bytes, block_size: int) -> tuple[list[int], bytes]:
        """Token ids and block hashes of the request's prompt; TemplateError (400) when it cannot be rendered."""
        request_id = next(self._ids)
        started = time.perf_counter()
        future = self.loop.create_future()
        message = wire.encoder.encode(wire.TokenizeRequest(request_id, model_path, kind, body, block_size))
        self._waiting[request_id] = (future, message)
        self._send(message)
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
        waiting = self._waiting.get(result.request_id)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(result)

    def _send(self, message: bytes) -> None:
        self._sock.send(message)
        self._drainer.after_send()

    def _on_disconnect(self, frames: list[bytes]) -> None:
        """A pool process went away: send every waiting request again (to the others, or to its successor)."""
        if parse_monitor_message(frames)["event"] != zmq.EVENT_DISCONNECTED:
            return
        waiting = [message for future, message in self._waiting.values() if not future.done()]
        for message in waiting:
            self._send(message)
        if waiting:
            log.info("a tokenizer went away; its requests are sent again", extra={"requests": len(waiting)})

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close()
        self._drainer.close()
