"""Worker SDK: register a model with the frontend, keep the lease alive, serve the request plane.

Sockets:
    send_to_registry   DEALER  connect  ``registry_endpoint`` (tcp)   Register / Heartbeat / Unregister, Ack back
    recv_from_gateways TCP     listen   HOST:random                    Generate/Abort/PauseRequest in,
                                                                       OutputBatch out; Embed/Image/VideoRequest
                                                                       in, their replies out (protocol.engine;
                                                                       one connection per gateway process,
                                                                       ``request_plane.py``)

With ``etcd`` settings (``--discovery-backend etcd``) the registry socket is not used: the instance is a key in
etcd under a lease of ``lease_ttl_s`` kept alive (``etcd_lease.py``), and the frontends watch etcd.

An engine implements :class:`Engine`: ``add_request`` and ``abort_request`` for text generation, reporting
tokens through the :class:`TokenSink` it is given, and/or the coroutines ``embed``, ``generate_images`` and
``generate_video`` for the other model types (served by ``unary.py``). Each model type of the card needs its
method; a missing one is a RegistrationError, and a request for it fails with "this worker does not serve
...". A paused request (its client reads too slowly) is held: its outputs wait in the worker until it is
resumed, and an engine that can stop generating for it does (``pause_request``). Outputs emitted in the same
event-loop turn are coalesced into one ``OutputBatch`` per gateway, so a
step-based engine sends one message per step per gateway. When a gateway's connection goes (its process died, it
went silent), the requests it sent are aborted. With ``OTEL_EXPORT_ENABLED`` the runtime traces: a
request whose gateway traces it (``GenerateRequest.trace_context``) gets a ``worker.generate`` span, child of the
gateway's request span, from its arrival to its finish reason or abort (``TokenSink.span``; see
``frontend/observability/tracing.py``).

The registry socket is a plain ZeroMQ socket drained from the event loop by
``frontend.transport.zmqloop.SocketDrainer`` (no zmq.asyncio future per message); the gateways' connections are
asyncio TCP connections of the same loop.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import signal
import time
import uuid
from typing import TYPE_CHECKING, Awaitable, Sequence

import msgspec
import zmq

from ..config.etcd_settings import EtcdSettings
from ..observability.tracing import end_worker_span, start_worker_tracing
from ..protocol import engine as engine_wire, registry as registry_wire
from ..protocol.engine import (AbortRequest, EmbedRequest, GenerateRequest, ImageRequest, MediaItem, PauseRequest, Ping,
                               Pong, RequestOutput, TokenLogprob, VideoRequest)
from ..protocol.errors import FrontendError
from ..protocol.registry import ModelCard
from ..transport.framing import frame
from ..transport.process import tune_garbage_collector
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer
from .checksum import model_checksum
from .request_plane import GatewayConnection, RequestListener
from .status_server import MetricRow, StatusServer
from .unary import TYPE_METHODS, InvalidInput, NotServed, ProgressSink, UnaryServer, Vector

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .etcd_lease import EtcdLease

log = logging.getLogger(__name__)

_PONG = frame(engine_wire.encoder.encode(Pong()))
REGISTER_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 30.0
DRAIN_POLL_S = 0.05


class RegistrationError(FrontendError):
    """The registry refused this worker (namespace or model-card mismatch) or could not be reached."""


class TokenSink:
    """Where an engine sends the tokens of one request; ``finished`` after a finish reason was sent. While the
    gateway has paused the request, outputs are held here (``held``) and sent when it resumes. ``span``: the
    request's ``worker.generate`` span while this worker traces and the gateway sent a trace context
    (``request.trace_context``), else None; it ends with the finish reason."""

    __slots__ = ("request_id", "_runtime", "gateway", "finished", "held", "span")

    def __init__(self, request_id: str, runtime: "WorkerRuntime", gateway: GatewayConnection) -> None:
        self.request_id = request_id
        self._runtime = runtime
        self.gateway = gateway
        self.finished = False
        self.held: list[RequestOutput] | None = None  # a list while paused
        self.span: Span | None = None

    def send(self, token_ids: list[int], finish_reason: str | None = None,
             logprobs: list[TokenLogprob] | None = None, error: str | None = None, cached_tokens: int = 0,
             invalid: bool = False, retryable: bool = False, kv_transfer_params: dict | None = None) -> None:
        """Queue new tokens (and the finish reason on the last call) for the gateway; an ``error`` with
        ``invalid`` blames the request (the client gets a 400), one with ``retryable`` this engine (the
        gateway continues the request on another worker). A prefill leg's last output gives
        ``kv_transfer_params``: where a decode worker finds the prompt's KV."""
        if self.finished:
            return
        output = RequestOutput(self.request_id, token_ids, finish_reason, logprobs, error, cached_tokens, invalid,
                               retryable, kv_transfer_params)
        if finish_reason is not None:
            self.finished = True
            if self.span is not None:
                end_worker_span(self.span, finish_reason)
            if self.held is None:
                self._runtime._forget(self.request_id)  # a held request is forgotten when it is resumed
        if self.held is not None:
            self.held.append(output)
        else:
            self._runtime._emit(self.gateway, output)

    def pause(self, paused: bool) -> None:
        """Hold the outputs from now on, or send the held ones and stop holding."""
        if paused:
            if self.held is None:
                self.held = []
            return
        held, self.held = self.held, None
        for output in held or ():
            self._runtime._emit(self.gateway, output)
        if self.finished:
            self._runtime._forget(self.request_id)


class Engine(abc.ABC):
    """What an inference engine implements to be served by :class:`WorkerRuntime`; every method is optional,
    but each model type of the card needs its own (see ``serves``)."""

    def add_request(self, request: GenerateRequest, sink: TokenSink) -> None:
        """Start generating; call ``sink.send`` as tokens are produced and once with a finish reason. Raise
        ``InvalidInput`` for a request the engine refuses (the client gets a 400 with its message)."""
        raise NotServed("this worker does not serve text generation (chat, completions)")

    def abort_request(self, request_id: str) -> None:
        """Stop generating for a request the client no longer wants (default: nothing)."""

    def pause_request(self, request_id: str, paused: bool) -> None:
        """Stop (or resume) generating for a request whose client reads too slowly (default: nothing; its
        outputs are held in the worker until it is resumed)."""

    async def embed(self, request: EmbedRequest) -> Sequence[Vector]:
        """One vector per input of ``request.inputs`` (token ids), in order: little-endian float32 bytes (the
        fastest) or a sequence of floats. Raise ``InvalidInput`` for a request the engine cannot take."""
        raise NotServed("this worker does not serve embeddings")

    async def generate_images(self, request: ImageRequest, progress: ProgressSink) -> Sequence[MediaItem]:
        """``request.n`` encoded images in ``request.output_format``; report progress as the work goes."""
        raise NotServed("this worker does not serve image generation")

    async def generate_video(self, request: VideoRequest, progress: ProgressSink) -> Sequence[MediaItem]:
        """One encoded video; with ``progress.wants_frames`` also every frame as JPEG through
        ``progress.frame`` as it is made (the returned list may then be empty)."""
        raise NotServed("this worker does not serve video generation")

    def worker_metrics(self, labels: tuple[tuple[str, str], ...]) -> list[MetricRow]:
        """The engine's rows of the worker's ``/metrics`` (``--system-port``), each with ``labels`` (default:
        none). E.g. prompt tokens by source (``status_server.PromptTokenSources``)."""
        return []

    def serves(self, model_type: str) -> bool:
        """Whether the engine implements what ``model_type`` needs (default: it overrides that method)."""
        method = TYPE_METHODS.get(model_type)
        return method is not None and getattr(type(self), method) is not getattr(Engine, method)


class WorkerRuntime:
    """Owns the sockets, codecs, lease and request routing of one worker instance.

    ``context`` is the ZeroMQ context for its registry socket; the engine's publishers may share it. Without one
    the runtime makes its own and terminates it on :meth:`close` (a context passed in is left to its owner).
    """

    def __init__(self, engine: Engine, *, registry_endpoint: str, namespace: str = "dynamo",
                 host: str = "127.0.0.1", instance_id: str | None = None, context: zmq.Context | None = None,
                 etcd: EtcdSettings | None = None, lease_ttl_s: float = 10.0, system_port: int = 0) -> None:
        self.engine = engine
        self.system_port = system_port  # >0: serve /metrics and /health there while serving (status_server.py)
        self.etcd = etcd  # --discovery-backend etcd: register there (``etcd_lease.py``), not with a registry
        self.registry_endpoint = registry_endpoint
        self.namespace = namespace
        self.host = host
        self.instance_id = instance_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._owns_context = context is None
        self.context = zmq.Context() if context is None else context
        self._listener = RequestListener(host)  # bound now; accepting from the first registration on
        self.endpoint = self._listener.endpoint
        self._registry: SocketDrainer | None = None
        self._registry_reply: asyncio.Future[bytes] | None = None
        self._registry_turn = asyncio.Lock()
        self._card: ModelCard | None = None
        self._lease_ttl_s = lease_ttl_s
        self._etcd_lease: EtcdLease | None = None
        self._routes: dict[str, TokenSink] = {}
        self._pending: dict[GatewayConnection, list[RequestOutput]] = {}
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unary: UnaryServer | None = None
        self.malformed_frames = 0
        self.tracing = start_worker_tracing()  # None unless OTEL_EXPORT_ENABLED (observability/tracing.py)

    # ---- registration -------------------------------------------------------------------------------

    async def register_model(self, card: ModelCard) -> None:
        """Announce the model; raises RegistrationError when refused, when the engine does not serve one of
        the card's model types, or when the registry does not answer. Fills in the card's checksum."""
        missing = [kind for kind in card.model_types if not self.engine.serves(kind)]
        if missing:
            raise RegistrationError(f"model {card.name!r}: the engine does not serve model type(s) "
                                    f"{', '.join(missing)} (types: {', '.join(TYPE_METHODS)})")
        if not card.checksum:
            card = msgspec.structs.replace(card, checksum=model_checksum(card.model_path))
        self._card = card
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._unary = UnaryServer(self.engine, self._loop, self._send_now)
            await self._listener.start(self._loop, self)
        if self.etcd is not None:
            await self._register_etcd(card)
            return
        ack = await self._call_registry(registry_wire.Register(self.instance_id, self.namespace, self.endpoint, card))
        if not ack.ok:
            raise RegistrationError(f"registry refused model {card.name!r}: {ack.error}")
        self._lease_ttl_s = ack.lease_ttl_s or self._lease_ttl_s
        log.info("registered", extra={"model": card.name, "instance": self.instance_id, "endpoint": self.endpoint})

    async def _register_etcd(self, card: ModelCard) -> None:
        from .etcd_lease import ETCD_ERRORS, EtcdLease  # only with etcd: the embedded path loads no etcd client

        assert self.etcd is not None
        if self._etcd_lease is None:
            self._etcd_lease = EtcdLease(self.etcd, self.namespace, self._lease_ttl_s)
        try:
            await self._etcd_lease.register(registry_wire.Instance(self.instance_id, self.endpoint, card))
        except (*ETCD_ERRORS, ValueError) as exc:
            raise RegistrationError(f"cannot register model {card.name!r} in etcd at {self.etcd.endpoints}: "
                                    f"{exc}") from None
        log.info("registered", extra={"model": card.name, "instance": self.instance_id, "endpoint": self.endpoint,
                                      "discovery": "etcd"})

    async def _call_registry(self, message: msgspec.Struct, timeout_s: float = REGISTER_TIMEOUT_S
                             ) -> registry_wire.Ack:
        """One request and its Ack; calls take turns, so each reply is its own call's. No answer within
        ``timeout_s`` is a RegistrationError, and the socket is replaced: a late reply never reaches a later call."""
        async with self._registry_turn:
            loop = asyncio.get_running_loop()
            if self._registry is None:
                sock = open_socket(self.context, zmq.DEALER, connect=self.registry_endpoint)
                self._registry = SocketDrainer(loop, sock, self._on_registry_reply)
            drainer = self._registry
            self._registry_reply = reply = loop.create_future()
            try:
                # connect() made the pipe, so the request queues until the registry is reached
                drainer.sock.send(registry_wire.encoder.encode(message), zmq.NOBLOCK)
                drainer.after_send()
                payload = await asyncio.wait_for(reply, timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError, zmq.Again) as exc:
                drainer.close()  # with its unanswered request
                self._registry = None
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise RegistrationError(f"registry at {self.registry_endpoint} did not answer in "
                                        f"{timeout_s:.1f} s") from None
            finally:
                self._registry_reply = None
        return registry_wire.ack_decoder.decode(payload)

    def _on_registry_reply(self, frames: list[bytes]) -> None:
        reply = self._registry_reply
        if reply is not None and not reply.done():
            reply.set_result(frames[-1])

    async def serve(self, card: ModelCard, *, drain_timeout_s: float = DRAIN_TIMEOUT_S,
                    until: Awaitable | None = None) -> None:
        """Register ``card`` and keep the lease alive until SIGTERM or SIGINT (or until ``until`` completes, e.g.
        the engine died), then drain (:meth:`drain`), unregister and close."""
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        status = await self._start_status_server()
        await self.register_model(card)
        tune_garbage_collector()  # the engine is built: what it made at start-up is never collected again
        heartbeats = asyncio.create_task(self.keep_alive())
        try:
            await asyncio.wait([stop, *([asyncio.ensure_future(until)] if until is not None else [])],
                               return_when=asyncio.FIRST_COMPLETED)
            await self.drain(drain_timeout_s)
        finally:
            heartbeats.cancel()
            if status is not None:
                status.close()
            await self.close()

    async def _start_status_server(self) -> StatusServer | None:
        """The ``--system-port`` endpoint, if one is asked for (before registering: a scraper finds it at once)."""
        if not self.system_port:
            return None
        status = StatusServer(self.host, self.system_port, self.status_metrics, self.status_health)
        await status.start()
        return status

    def status_metrics(self) -> list[MetricRow]:
        """The worker's ``/metrics`` rows: its requests in flight, then the engine's own."""
        labels = (("worker_id", self.instance_id),)
        return [MetricRow("worker_active_requests", "Generation requests in flight on the worker.", "gauge", labels,
                          len(self._routes)), *self.engine.worker_metrics(labels)]

    def status_health(self) -> dict:
        """The worker's ``/health`` body."""
        card = self._card
        return {"status": "ready" if card is not None else "starting", "instance_id": self.instance_id,
                "model": card.name if card is not None else None, "endpoint": self.endpoint,
                "disaggregation_mode": card.disaggregation_mode if card is not None else None}

    async def drain(self, timeout_s: float) -> None:
        """Take no new requests (the registry marks this instance draining) and wait up to ``timeout_s`` for
        the requests in flight to finish; nothing to do for an idle worker."""
        if not self.active_requests:
            return
        log.info("draining", extra={"instance": self.instance_id, "in_flight": self.active_requests})
        await self._announce_drain()
        deadline = time.monotonic() + timeout_s
        while self.active_requests and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        if self.active_requests:
            log.warning("drain timed out", extra={"in_flight": self.active_requests})

    async def _announce_drain(self) -> None:
        """Tell discovery this instance drains (best effort: the requests in flight finish either way)."""
        try:
            if self._etcd_lease is not None:
                await self._etcd_lease.drain()
            else:
                await self._call_registry(registry_wire.Drain(self.instance_id), 1.0)
        except Exception as exc:  # etcd or registry unreachable: nothing else to do
            log.warning("could not announce draining", extra={"error": str(exc)})

    async def keep_alive(self) -> None:
        """Heartbeat every third of the lease, each waiting at most that long for its answer (one lost reply
        must not cost the lease); register again if the registry forgot this instance. With etcd: renew the
        lease (a new one when it was lost)."""
        if self._etcd_lease is not None:
            await self._etcd_lease.keep_alive()
            return
        while True:
            interval = self._lease_ttl_s / 3
            await asyncio.sleep(interval)
            try:
                ack = await self._call_registry(registry_wire.Heartbeat(self.instance_id),
                                                min(interval, REGISTER_TIMEOUT_S))
                if ack.unknown_instance and self._card is not None:
                    await self.register_model(self._card)
            except RegistrationError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})

    async def close(self) -> None:
        """Unregister (best effort, if a registration was attempted) and close the sockets and contexts."""
        if self._etcd_lease is not None:
            await self._etcd_lease.close()
        elif self._card is not None:
            try:
                await self._call_registry(registry_wire.Unregister(self.instance_id), 1.0)
            except RegistrationError:
                pass
        if self._unary is not None:
            self._unary.close()
        await self._listener.close()
        if self._registry is not None:
            self._registry.close()
            self._registry = None
        if self._owns_context:
            self.context.term()
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still queued

    # ---- request plane ------------------------------------------------------------------------------

    def on_gateway_frame(self, gateway: GatewayConnection, payload: memoryview) -> None:
        """One frame from a gateway: a request, an abort or pause, or a heartbeat."""
        try:
            message = engine_wire.to_worker_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            self.malformed_frames += 1
            log.warning("malformed request frame", extra={"error": str(exc)})
            return
        if isinstance(message, GenerateRequest):
            self._start(gateway, message)
        elif isinstance(message, AbortRequest):
            self._abort(message.request_id)
        elif isinstance(message, PauseRequest):
            self._pause(message.request_id, message.paused)
        elif isinstance(message, Ping):
            gateway.write(_PONG)
        else:
            assert self._unary is not None
            self._unary.start(gateway, message)

    def on_gateway_lost(self, gateway: GatewayConnection) -> None:
        """A gateway's connection is gone: nobody reads its requests' outputs any more, so they are aborted."""
        self._listener.forget(gateway)
        self._pending.pop(gateway, None)
        for request_id in [rid for rid, sink in self._routes.items() if sink.gateway is gateway]:
            self._abort(request_id)
        if self._unary is not None:
            self._unary.abort_from(gateway)

    def _start(self, gateway: GatewayConnection, request: GenerateRequest) -> None:
        sink = TokenSink(request.request_id, self, gateway)
        if self.tracing is not None and request.trace_context:
            sink.span = self.tracing.worker_span(request, self.instance_id)
        self._routes[request.request_id] = sink
        try:
            self.engine.add_request(request, sink)
        except InvalidInput as exc:
            sink.send([], "error", error=str(exc), invalid=True)
        except Exception as exc:  # an engine bug fails this request only
            log.exception("engine rejected request", extra={"request_id": request.request_id})
            sink.send([], "error", error=f"engine error: {exc}")

    def _abort(self, request_id: str) -> None:
        sink = self._routes.pop(request_id, None)
        if sink is not None:
            if sink.span is not None and not sink.finished:
                end_worker_span(sink.span, "aborted")
            sink.finished = True
            self.engine.abort_request(request_id)
        elif self._unary is not None:
            self._unary.abort(request_id)

    def _pause(self, request_id: str, paused: bool) -> None:
        sink = self._routes.get(request_id)
        if sink is not None:
            sink.pause(paused)
            if not sink.finished:
                self.engine.pause_request(request_id, paused)

    def _forget(self, request_id: str) -> None:
        self._routes.pop(request_id, None)

    def _emit(self, gateway: GatewayConnection, output: RequestOutput) -> None:
        pending = self._pending.get(gateway)
        if pending is None:
            self._pending[gateway] = [output]
        else:
            pending.append(output)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        encode = engine_wire.encoder.encode
        for gateway, outputs in pending.items():
            gateway.send(encode(engine_wire.OutputBatch(outputs)))

    def _send_now(self, gateway: GatewayConnection, message: msgspec.Struct) -> None:
        """Send one unary reply at once (not batched)."""
        gateway.send(engine_wire.encoder.encode(message))

    @property
    def active_requests(self) -> int:
        return len(self._routes) + (len(self._unary.tasks) if self._unary is not None else 0)
