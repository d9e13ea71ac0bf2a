"""The gateway side of the request plane: one TCP connection per worker instance, streams keyed by request id.

Replies arrive as ``OutputBatch`` messages (one per engine step); the connection splits them into the
per-request :class:`RequestStream` buffers and wakes each waiting handler once, however many tokens came.
Replies of unary requests (``MediaProgress``, ``EmbedResult``, ``MediaResult``, ``UnaryError``; see
``frontend/pipeline/unary.py``) go to their request's stream as they are.

Flow control: a request's stream holds at most ``max_queued_tokens`` tokens its reader has not taken (a reader
slower than its worker: a stream waiting for a slow client, a busy process). Past that the worker is told to
pause the request (``PauseRequest``), and to resume it when the reader takes what is queued. What was in flight
when the pause lands still arrives: the bound is the limit plus the worker's output over one round trip.

A lost connection (the worker's process died: its kernel closed the connection; or it stopped answering
heartbeats) fails the requests on it with ``WorkerGone`` at once, and the instance is not routed to until a
reconnection succeeds (tried every ``RECONNECT_MIN_S``, backing off to ``RECONNECT_MAX_S``, while discovery
lists the instance).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import msgspec

from ..postprocess.plain_tokens import PlainTokens
from ..protocol import engine as wire
from ..protocol.engine import (AbortRequest, GenerateRequest, OutputBatch, PauseRequest, Ping, Pong, RequestOutput,
                               UnaryRequest)
from ..protocol.errors import WorkerGone
from ..protocol.registry import Instance
from ..transport.end_of_turn import end_of_turn
from ..transport.framing import FramedProtocol, frame, frames, tcp_address
from .delivery import deliver

HEARTBEAT_IVL_S = 1.0  # a Ping on every connection this often
HEARTBEAT_TIMEOUT_S = 3.0  # nothing heard from a worker for this long: the connection is lost
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0

log = logging.getLogger(__name__)

_PING = frame(wire.encoder.encode(Ping()))


class RequestStream:
    """Outputs of one request as they arrive; ``next()`` returns everything received since the last call.

    Items are ``RequestOutput`` for a generation; the replies of a unary request otherwise. When the worker
    goes away, ``next()`` raises :class:`~frontend.protocol.errors.WorkerGone` once the items received before
    are read; :meth:`wake` ends a wait with nothing (its reader is told to stop by other means).

    ``direct``, when set, is offered each output that arrives while the reader waits with nothing queued: it
    returns True when it handled the output there and then (a streamed response writing a token's event,
    ``Generation.write_directly``), and the reader is not woken; False queues it as usual. ``plain``, when set,
    is offered such an output first: a ``PlainTokens`` writes plain text outputs in one native call
    (``PlainTokens.take``), without a Python function between the worker's message and the queued event.
    """

    __slots__ = ("request_id", "instance_id", "_items", "_waiter", "_loop", "_failure", "_client", "_queued",
                 "_paused", "direct", "plain")

    def __init__(self, client: "EngineClient", request_id: str, instance_id: str) -> None:
        self.request_id = request_id
        self.instance_id = instance_id
        self._items: list = []
        self._waiter: asyncio.Future[None] | None = None
        self._loop = client.loop
        self._failure: str | None = None
        self._client = client
        self._queued = 0  # tokens in _items
        self._paused = False
        self.direct: Callable[[RequestOutput], bool] | None = None
        self.plain: PlainTokens | None = None

    def push(self, output) -> None:
        direct = self.direct
        if direct is not None and self._waiter is not None and not self._items and direct(output):
            return
        self._items.append(output)
        if type(output) is RequestOutput:
            self._queued += len(output.token_ids)
            if self._queued > self._client.max_queued_tokens and not self._paused:
                self._paused = True
                self._client.pause(self, True)
        self.wake()

    def fail(self, message: str) -> None:
        """The worker went away: ``next()`` raises ``WorkerGone(message)`` after the items already received (a
        new exception per raise, so that no stream keeps a traceback and the frames in it alive)."""
        self._failure = message
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def next(self) -> list:
        if not self._items:
            if self._failure is not None:
                raise WorkerGone(self._failure)
            self._waiter = self._loop.create_future()
            await self._waiter
            if not self._items and self._failure is not None:
                raise WorkerGone(self._failure)
        items, self._items = self._items, []
        self._queued = 0
        if self._paused:
            self._paused = False
            self._client.pause(self, False)
        return items


class WorkerConnection(FramedProtocol):
    """The connection to one worker instance. Requests submitted before it is up wait for it; while it is down
    the instance is ``unreachable`` and it reconnects (see the module docstring).

    New requests are written at the end of the event-loop turn that submitted them (:meth:`send_soon`), those of
    one turn together: under load one send (one wake-up of the worker) carries several requests. Every other
    message goes at once, after what is queued."""

    def __init__(self, client: "EngineClient", instance: Instance) -> None:
        super().__init__()
        self.instance = instance
        self._client = client
        self._address = tcp_address(instance.endpoint)
        self._queued: list[bytes] = []  # payloads of this turn, or waiting for the connection
        self._closed = False
        self._retry_s = RECONNECT_MIN_S
        self._missed = 0  # heartbeat intervals without a word from the worker
        self._connecting: asyncio.Task | None = client.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self._client.loop.create_connection(lambda: self, *self._address)
        except OSError as exc:
            self._down(f"cannot connect to the worker: {exc}")
        finally:
            self._connecting = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._closed:
            transport.abort()
            return
        self._retry_s = RECONNECT_MIN_S
        self._missed = 0
        self._client.unreachable.discard(self.instance.instance_id)
        if self._queued:
            self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._closed:
            self._down("the connection to the worker was lost")

    def _down(self, why: str) -> None:
        """Not connected: fail the requests on this worker, and try again later."""
        self._queued = []
        client = self._client
        instance_id = self.instance.instance_id
        if instance_id not in client.unreachable:
            log.warning("lost the connection to a worker", extra={"instance": instance_id, "reason": why})
        client.unreachable.add(instance_id)
        client._fail_streams(instance_id, "the worker serving this request went away (connection lost)")
        if not self._closed:
            client.loop.call_later(self._retry_s, self._reconnect)
            self._retry_s = min(self._retry_s * 2, RECONNECT_MAX_S)

    def _reconnect(self) -> None:
        if not self._closed and self.transport is None and self._connecting is None:
            self._connecting = self._client.loop.create_task(self._connect())

    def on_frame(self, payload: memoryview) -> None:
        self._client._on_frame(payload)

    def heartbeat(self) -> None:
        """Once per ``HEARTBEAT_IVL_S``: ping, and drop the connection when the worker went silent."""
        transport = self.transport
        if transport is None:
            return
        if self.heard:
            self.heard, self._missed = False, 0
        else:
            self._missed += 1
            if self._missed * HEARTBEAT_IVL_S >= HEARTBEAT_TIMEOUT_S:
                log.warning("a worker stopped answering", extra={"instance": self.instance.instance_id})
                transport.abort()  # connection_lost follows
                return
        transport.write(_PING)

    def send(self, message: msgspec.Struct) -> None:
        """Send now (what :meth:`send_soon` queued goes first)."""
        self._queued.append(wire.encoder.encode(message))
        self.flush()

    def send_soon(self, message: msgspec.Struct) -> None:
        """Send at the end of this event-loop turn, with the other messages queued in it."""
        if not self._queued:
            self._client.flush_soon(self)
        self._queued.append(wire.encoder.encode(message))

    def flush(self) -> None:
        """Write what is queued, in one write (kept for the connection while it is not up)."""
        transport = self.transport
        if transport is None or not self._queued:
            return
        payloads, self._queued = self._queued, []
        transport.write(frame(payloads[0]) if len(payloads) == 1 else frames(payloads))

    def close(self) -> None:
        self._closed = True
        self._queued = []  # a dropped instance's streams have failed; the end-of-turn flush finds nothing
        if self._connecting is not None:
            self._connecting.cancel()
        if self.transport is not None:
            self.transport.abort()


class EngineClient:
    """Submits requests to worker instances and routes their outputs back to the waiting streams."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_queued_tokens: int) -> None:
        self.loop = loop
        self.max_queued_tokens = max_queued_tokens  # per request, before its worker is paused
        self.connections: dict[str, WorkerConnection] = {}
        self.streams: dict[str, RequestStream] = {}
        self.unreachable: set[str] = set()  # connected instances whose connection is lost (not routed to)
        self.malformed_batches = 0
        self._end_of_turn = end_of_turn(loop)  # connections with requests queued in this loop turn (and streams)
        self._heartbeats: asyncio.TimerHandle | None = None

    def sync_instances(self, instances: list[Instance]) -> None:
        """Connect to new instances; drop gone ones and fail their in-flight requests."""
        live = {instance.instance_id: instance for instance in instances}
        for instance_id in list(self.connections):
            if instance_id not in live:
                self._drop(instance_id)
        for instance_id, instance in live.items():
            known = self.connections.get(instance_id)
            if known is None or known.instance.endpoint != instance.endpoint:
                if known is not None:
                    self._drop(instance_id)
                self.connections[instance_id] = WorkerConnection(self, instance)
        if self.connections and self._heartbeats is None:
            self._heartbeats = self.loop.call_later(HEARTBEAT_IVL_S, self._heartbeat)

    def _heartbeat(self) -> None:
        for connection in list(self.connections.values()):
            connection.heartbeat()
        self._heartbeats = self.loop.call_later(HEARTBEAT_IVL_S, self._heartbeat) if self.connections else None

    def _drop(self, instance_id: str) -> None:
        self.connections.pop(instance_id).close()
        self.unreachable.discard(instance_id)
        self._fail_streams(instance_id, "the worker serving this request went away")

    def _fail_streams(self, instance_id: str, reason: str) -> None:
        for stream in [s for s in self.streams.values() if s.instance_id == instance_id]:
            stream.fail(reason)

    def submit(self, instance_id: str, request: GenerateRequest | UnaryRequest) -> RequestStream:
        """Send ``request`` to the instance (at the end of this loop turn) and open its stream."""
        self.connections[instance_id].send_soon(request)
        stream = RequestStream(self, request.request_id, instance_id)
        self.streams[request.request_id] = stream
        return stream

    def flush_soon(self, connection: WorkerConnection) -> None:
        """``connection`` has queued requests: send them at the end of this loop turn, with the other requests
        that arrived with this one."""
        self._end_of_turn.add(connection)

    def release(self, stream: RequestStream, *, abort: bool) -> None:
        """Forget a stream; with ``abort`` tell the worker to stop generating for it."""
        self.streams.pop(stream.request_id, None)
        if abort:
            connection = self.connections.get(stream.instance_id)
            if connection is not None:
                connection.send(AbortRequest(stream.request_id))

    def pause(self, stream: RequestStream, paused: bool) -> None:
        """Ask the worker to stop (or resume) sending a request's outputs (see the module docstring)."""
        connection = self.connections.get(stream.instance_id)
        if connection is not None:
            connection.send(PauseRequest(stream.request_id, paused))

    def _on_frame(self, payload: memoryview) -> None:
        try:
            message = wire.from_worker_decoder.decode(payload)
        except msgspec.DecodeError:
            self.malformed_batches += 1
            return
        streams = self.streams
        if type(message) is not OutputBatch:  # a unary reply (or a Pong, which the read itself counted)
            if type(message) is Pong:
                return
            stream = streams.get(message.request_id)
            if stream is not None:
                stream.push(message)
            return
        deliver(message.outputs, streams)

    def close(self) -> None:
        for instance_id in list(self.connections):
            self._drop(instance_id)
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            self._heartbeats = None
