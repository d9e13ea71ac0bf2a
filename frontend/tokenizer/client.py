"""The gateway side of tokenization: short requests in this process, the rest in the pool.

A request whose body is at most ``inline_max_bytes`` (``--tokenize-inline-max-bytes``) is templated and tokenized
right here, once this process has the model loaded (a background thread loads it on first sight; meanwhile the
pool answers): no round trip to another process for the common short prompt, and the event loop is held at most
for about a millisecond. Longer requests go to the pool, so that a long prompt never stalls the streams this
process serves.

The pool: one DEALER connected to every pool process.

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
from ..observability.tracing import CURRENT_TRACE
from ..protocol import tokenizer as wire
from ..protocol.errors import ServiceUnavailable, TemplateError
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer
from .tokenization import Tokenization

TOKENIZE_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class TokenizerClient:
    """Sends prompts to the pool and awaits token ids."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, endpoints: list[str],
                 metrics: Metrics | None = None, inline_max_bytes: int = 0, fast_bpe: bool = True) -> None:
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
        self.inline_max_bytes = inline_max_bytes
        self._inline = Tokenization(release_gil=False, fast_bpe=fast_bpe)
        self._loading: set[str] = set()  # model paths loaded (or being loaded, or failed) for inline use

    async def tokenize(self, model_path: str, kind: str, body: bytes, block_size: int) -> tuple[list[int], bytes]:
        """Token ids and block hashes of the request's prompt; TemplateError (400) when it cannot be rendered."""
        request_id = next(self._ids)
        started = time.perf_counter()
        request = wire.TokenizeRequest(request_id, model_path, kind, body, block_size)
        inline = len(body) <= self.inline_max_bytes and self._inline_ready(model_path)
        result = self._inline.handle(request) if inline else await self._pool(request)
        if self._metrics is not None:
            self._metrics.observe("tokenizer_latency_ms", (("operation", "tokenize"),),
                                  (time.perf_counter() - started) * 1000)
        trace = CURRENT_TRACE.get()
        if trace is not None:
            trace.tokenized(started, len(result.token_ids), inline)
        if result.error is not None:
            raise TemplateError(result.error)
        return result.token_ids, result.block_hashes

    def _inline_ready(self, model_path: str) -> bool:
        """Whether the model is loaded here; on first sight start loading it in a thread (the pool answers
        meanwhile; a model that fails to load here stays with the pool, which reports its error)."""
        if self._inline.loaded(model_path):
            return True
        if model_path not in self._loading:
            self._loading.add(model_path)
            self.loop.run_in_executor(None, self._load_inline, model_path)
        return False

    def _load_inline(self, model_path: str) -> None:
        try:
            self._inline.model(model_path)
        except Exception as exc:  # noqa: BLE001 (any failure leaves the model to the pool)
            log.info("tokenizing in the pool only", extra={"model_path": model_path, "error": str(exc)})

    async def _pool(self, request: wire.TokenizeRequest) -> wire.TokenizeResult:
        future = self.loop.create_future()
        message = wire.encoder.encode(request)
        self._waiting[request.request_id] = (future, message)
        self._send(message)
        try:
            return await asyncio.wait_for(future, TOKENIZE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ServiceUnavailable("the tokenizer pool did not answer in time") from None
        finally:
            self._waiting.pop(request.request_id, None)

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
