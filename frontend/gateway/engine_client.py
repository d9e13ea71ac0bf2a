"""The gateway side of the request plane: one DEALER per worker instance, streams keyed by request id.

Replies arrive as ``OutputBatch`` messages (one per engine step); the socket callback splits them into the
per-request :class:`RequestStream` buffers and wakes each waiting handler once, however many tokens came.
Replies of unary requests (``MediaProgress``, ``EmbedResult``, ``MediaResult``, ``UnaryError``; see
``frontend/pipeline/unary.py``) go to their request's stream as they are.

Flow control: a request's stream holds at most ``max_queued_tokens`` tokens its reader has not taken (a reader
slower than its worker: a stream waiting for a slow client, a busy process). Past that the worker is told to
pause the request (``PauseRequest``), and to resume it when the reader takes what is queued. What was in flight
when the pause lands still arrives: the bound is the limit plus the worker's output over one round trip.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import zmq
from zmq.utils.monitor import parse_monitor_message

from ..protocol import engine as wire
from ..protocol.engine import AbortRequest, GenerateRequest, OutputBatch, PauseRequest, RequestOutput, UnaryRequest
from ..protocol.errors import WorkerGone
from ..protocol.registry import Instance
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer

HEARTBEAT_IVL_MS = 1000  # ZMTP PING on an idle connection to a worker
HEARTBEAT_TIMEOUT_MS = 3000  # no traffic for this long after a PING: the connection is lost

log = logging.getLogger(__name__)


class RequestStream:
    """Outputs of one request as they arrive; ``next()`` returns everything received since the last call.

    Items are ``RequestOutput`` for a generation; the replies of a unary request otherwise. When the worker
    goes away, ``next()`` raises :class:`~frontend.protocol.errors.WorkerGone` once the items received before
    are read; :meth:`wake` ends a wait with nothing (its reader is told to stop by other means).
    """

    __slots__ = ("request_id", "instance_id", "_items", "_waiter", "_loop", "_failure", "_client", "_queued",
                 "_paused")

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

    def push(self, output) -> None:
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


class WorkerConnection:
    """The DEALER socket to one worker instance, watched: ZMTP heartbeats (``HEARTBEAT_IVL_MS``) find a peer that
    stopped answering, and a socket monitor reports a lost connection (a killed worker's kernel closes its TCP
    connections at once), so its requests fail over in about a second instead of at its lease expiry.

    New requests are sent at the end of the event-loop turn that submitted them (:meth:`send_soon`), those of
    one turn together as the frames of one message: under load one ZeroMQ send (one wake-up of its I/O thread
    here and in the worker) carries several requests. Every other message goes at once, after what is queued."""

    def __init__(self, client: "EngineClient", instance: Instance) -> None:
        sock = open_socket(client.context, zmq.DEALER)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(instance.endpoint)
        self.instance = instance
        self.drainer = SocketDrainer(client.loop, sock, client._on_batch, multipart=False)
        self.monitor = SocketDrainer(client.loop, monitor,
                                     lambda frames: client._on_connection_event(instance.instance_id, frames))
        self.sock = sock
        self._client = client
        self._queued: list[bytes] = []

    def send(self, message: msgspec.Struct) -> None:
        """Send now (what :meth:`send_soon` queued goes first)."""
        if self._queued:
            self.flush()
        self.sock.send(wire.encoder.encode(message))
        self.drainer.after_send()

    def send_soon(self, message: msgspec.Struct) -> None:
        """Send at the end of this event-loop turn, with the other messages queued in it."""
        if not self._queued:
            self._client.flush_soon(self)
        self._queued.append(wire.encoder.encode(message))

    def flush(self) -> None:
        """Send what is queued, as one message (nothing once closed: closing empties the queue)."""
        frames, self._queued = self._queued, []
        if not frames:
            return
        if len(frames) == 1:
            self.sock.send(frames[0])
        else:
            self.sock.send_multipart(frames)
        self.drainer.after_send()

    def close(self) -> None:
        self._queued = []  # a dropped instance's streams have failed; the end-of-turn flush finds nothing
        self.sock.disable_monitor()
        self.monitor.close()
        self.drainer.close()


class EngineClient:
    """Submits requests to worker instances and routes their outputs back to the waiting streams."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, max_queued_tokens: int) -> None:
        self.loop = loop
        self.context = context
        self.max_queued_tokens = max_queued_tokens  # per request, before its worker is paused
        self.connections: dict[str, WorkerConnection] = {}
        self.streams: dict[str, RequestStream] = {}
        self.unreachable: set[str] = set()  # connected instances whose connection is lost (not routed to)
        self.malformed_batches = 0
        self._due: list[WorkerConnection] = []  # connections with requests queued in this loop turn

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

    def _drop(self, instance_id: str) -> None:
        self.connections.pop(instance_id).close()
        self.unreachable.discard(instance_id)
        self._fail_streams(instance_id, "the worker serving this request went away")

    def _fail_streams(self, instance_id: str, reason: str) -> None:
        for stream in [s for s in self.streams.values() if s.instance_id == instance_id]:
            stream.fail(reason)

    def _on_connection_event(self, instance_id: str, frames: list[bytes]) -> None:
        """The connection to a worker was lost (its requests fail with ``WorkerGone``, and it is not routed to)
        or (re)established."""
        event = parse_monitor_message(frames)["event"]
        if event == zmq.EVENT_DISCONNECTED:
            if instance_id not in self.unreachable:
                log.warning("lost the connection to a worker", extra={"instance": instance_id})
            self.unreachable.add(instance_id)
            self._fail_streams(instance_id, "the worker serving this request went away (connection lost)")
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.unreachable.discard(instance_id)

    def submit(self, instance_id: str, request: GenerateRequest | UnaryRequest) -> RequestStream:
        """Send ``request`` to the instance (at the end of this loop turn) and open its stream."""
        self.connections[instance_id].send_soon(request)
        stream = RequestStream(self, request.request_id, instance_id)
        self.streams[request.request_id] = stream
        return stream

    def flush_soon(self, connection: WorkerConnection) -> None:
        """``connection`` has queued requests: send them at the end of this loop turn (``call_soon`` runs after
        the callbacks already ready, the other requests that arrived with this one)."""
        if not self._due:
            self.loop.call_soon(self._flush_due)
        self._due.append(connection)

    def _flush_due(self) -> None:
        due, self._due = self._due, []
        for connection in due:
            connection.flush()

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

    def _on_batch(self, frame: bytes) -> None:
        try:
            message = wire.from_worker_decoder.decode(frame)
        except msgspec.DecodeError:
            self.malformed_batches += 1
            return
        streams = self.streams
        if type(message) is not OutputBatch:  # a unary reply
            stream = streams.get(message.request_id)
            if stream is not None:
                stream.push(message)
            return
        for output in message.outputs:
            stream = streams.get(output.request_id)
            if stream is not None:
                stream.push(output)

    def close(self) -> None:
        for instance_id in list(self.connections):
            self._drop(instance_id)
