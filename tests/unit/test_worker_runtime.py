"""The worker SDK's sockets over real sockets: registry calls and the request plane (frontend/worker/runtime.py,
request_plane.py) against a registry and gateways played by the test on the same event loop, and the KV event publisher's
replay (frontend/worker/kv_publisher.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import msgspec
import pytest
import zmq
from async_support import until
from framed_peer import FramedPeer

from frontend.protocol import engine as engine_wire, kv_events as kv_wire, registry as registry_wire
from frontend.protocol.engine import (EmbedRequest, GenerateRequest, OutputBatch, Ping, Pong, RequestOutput,
                                      StopConditions)
from frontend.protocol.registry import ModelCard
from frontend.transport.framing import HEADER, MAX_FRAME_BYTES, frames
from frontend.transport.sockets import bind_random_port, open_socket
from frontend.transport.zmqloop import SocketDrainer
from frontend.worker import Engine, RegistrationError, WorkerRuntime, request_plane
from frontend.worker.kv_publisher import KvEventPublisher

CARD = ModelCard("m", "config/models/tiny", checksum="fixed")


class Counter(Engine):
    """Answers every request with three tokens in one event-loop turn."""

    def add_request(self, request, sink):
        sink.send([1])
        sink.send([2])
        sink.send([3], "length")


class FakeRegistry:
    """A registry ROUTER answering each message with ``answer(message)``: an Ack, or (delay_s, Ack)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, answer) -> None:
        self.loop = loop
        self.answer = answer
        self.sock = open_socket(context, zmq.ROUTER)
        self.endpoint = bind_random_port(self.sock, "127.0.0.1")
        self.received: list[tuple[bytes, msgspec.Struct]] = []
        self.drainer = SocketDrainer(loop, self.sock, self._on_message)

    def _on_message(self, frames: list[bytes]) -> None:
        identity, payload = frames
        message = registry_wire.to_registry_decoder.decode(payload)
        self.received.append((identity, message))
        answer = self.answer(message)
        delay_s, ack = answer if isinstance(answer, tuple) else (0.0, answer)
        self.loop.call_later(delay_s, self._send, identity, ack)

    def _send(self, identity: bytes, ack: registry_wire.Ack) -> None:
        self.sock.send_multipart([identity, registry_wire.encoder.encode(ack)])
        self.drainer.after_send()

    def close(self) -> None:
        self.drainer.close()


@contextlib.asynccontextmanager
async def serving(engine: Engine, card: ModelCard = CARD) -> AsyncIterator[WorkerRuntime]:
    """A runtime of ``engine`` registered with a registry that accepts it; closed (with the registry) after."""
    context = zmq.Context()
    registry = FakeRegistry(asyncio.get_running_loop(), context,
                            lambda message: registry_wire.Ack(ok=True, lease_ttl_s=30.0))
    runtime = WorkerRuntime(engine, registry_endpoint=registry.endpoint, context=context)
    try:
        await runtime.register_model(card)
        yield runtime
    finally:
        await runtime.close()
        registry.close()
        context.term()


def test_register_serve_and_unregister(run):
    """Requests one per write and several per write (one per frame); malformed frames are counted."""
    async def scenario() -> tuple[list, list, int]:
        loop = asyncio.get_running_loop()
        context = zmq.Context()
        registry = FakeRegistry(loop, context, lambda message: registry_wire.Ack(ok=True, lease_ttl_s=30.0))
        runtime = WorkerRuntime(Counter(), registry_endpoint=registry.endpoint, context=context)
        batches: list[OutputBatch] = []
        try:
            await runtime.register_model(CARD)
            gateway = await FramedPeer.connect(runtime.endpoint)
            gateway.send(b"\xc1")  # not msgpack
            gateway.write(frames([b"two", b"frames"]))  # two requests in one write, neither msgpack
            for request_id in ("r1", "r2"):
                gateway.send(engine_wire.encoder.encode(GenerateRequest(request_id, [7, 8],
                                                                        StopConditions(max_tokens=3))))
                batches.append(engine_wire.from_worker_decoder.decode(await gateway.read()))
            # a gateway writes the requests of one loop turn together (gateway/engine_client.py)
            gateway.write(frames([engine_wire.encoder.encode(GenerateRequest(request_id, [7, 8],
                                                                             StopConditions(max_tokens=3)))
                                  for request_id in ("a", "b")]))
            while sum(len(batch.outputs) for batch in batches[2:]) < 6:
                batches.append(engine_wire.from_worker_decoder.decode(await gateway.read()))
            gateway.send(engine_wire.encoder.encode(Ping()))
            assert engine_wire.from_worker_decoder.decode(await gateway.read()) == Pong()
            assert runtime.active_requests == 0
            gateway.close()
        finally:
            await runtime.close()
            registry.close()
            context.term()  # the runtime closed its sockets and left the context it was given
        return batches, [message for _, message in registry.received], runtime.malformed_frames

    batches, messages, malformed = run(scenario())
    assert [type(message) for message in messages] == [registry_wire.Register, registry_wire.Unregister]
    assert messages[0].card == CARD
    assert malformed == 3
    for batch, request_id in zip(batches, ("r1", "r2")):  # one batch per event-loop turn
        assert batch == OutputBatch([RequestOutput(request_id, [1], None), RequestOutput(request_id, [2], None),
                                     RequestOutput(request_id, [3], "length")])
    both = [(output.request_id, output.token_ids, output.finish_reason) for batch in batches[2:]
            for output in batch.outputs]
    assert both == [(request_id, [token], "length" if token == 3 else None) for request_id in "ab"
                    for token in (1, 2, 3)]


class Endless(Engine):
    """Starts every request and never finishes one; records aborts."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.aborted: list[str] = []

    def add_request(self, request, sink):
        self.started.append(request.request_id)
        sink.send([1])

    def abort_request(self, request_id):
        self.aborted.append(request_id)

    async def embed(self, request):
        self.started.append(request.request_id)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.aborted.append(request.request_id)
            raise


@pytest.mark.parametrize("how", ["closes", "oversized-frame", "goes-silent"])
def test_a_gateway_that_goes_away_has_its_requests_aborted(run, monkeypatch, how):
    """Its connection closes, it sends a frame over the limit (the worker closes it), or it goes silent (no
    heartbeat): nobody will read its requests' outputs, so the engine stops generating them. Another gateway's
    request runs on."""
    monkeypatch.setattr(request_plane, "GATEWAY_SILENT_S", 0.2)

    async def scenario() -> tuple[list[str], list[str], int, bytes | None]:
        loop = asyncio.get_running_loop()
        engine = Endless()
        async with serving(engine) as runtime:
            leaving, staying = await FramedPeer.connect(runtime.endpoint), await FramedPeer.connect(runtime.endpoint)
            for gateway, request_id in ((leaving, "gone"), (staying, "kept")):
                gateway.send(engine_wire.encoder.encode(GenerateRequest(request_id, [7], StopConditions(max_tokens=9))))
                await gateway.read()  # its first output
            keep_talking = loop.create_task(_ping_every(staying, 0.05))
            if how == "closes":
                leaving.close()
            elif how == "oversized-frame":
                leaving.write(HEADER.pack(MAX_FRAME_BYTES + 1) + b"x" * 100)
            await until(lambda: engine.aborted)
            last_read = await asyncio.wait_for(leaving.read(), 1.0) if how != "closes" else None
            keep_talking.cancel()
            active, aborted = runtime.active_requests, list(engine.aborted)
            leaving.close()
            staying.close()
        return engine.started, aborted, active, last_read

    started, aborted, active, last_read = run(scenario())
    assert started == ["gone", "kept"] and aborted == ["gone"]
    assert active == 1  # the other gateway's request
    assert last_read is None  # the worker closed the connection


def test_a_gateway_that_goes_away_has_its_unary_requests_cancelled(run):
    async def scenario() -> tuple[list[str], list[str], int]:
        engine = Endless()
        async with serving(engine, msgspec.structs.replace(CARD, model_types=["embedding"])) as runtime:
            gateway = await FramedPeer.connect(runtime.endpoint)
            gateway.send(engine_wire.encoder.encode(EmbedRequest("e1", [[1, 2]])))
            await until(lambda: engine.started == ["e1"])
            gateway.close()
            await until(lambda: engine.aborted)
            active = runtime.active_requests
        return engine.started, engine.aborted, active

    assert run(scenario()) == (["e1"], ["e1"], 0)


async def _ping_every(gateway: FramedPeer, interval_s: float) -> None:
    while True:
        gateway.send(engine_wire.encoder.encode(Ping()))
        await asyncio.sleep(interval_s)


def test_a_late_registry_reply_never_answers_a_later_call(run):
    def answer(message):
        if isinstance(message, registry_wire.Register):
            return 0.3, registry_wire.Ack(ok=False, error="late")
        return registry_wire.Ack(ok=True, unknown_instance=True)

    async def scenario() -> tuple[registry_wire.Ack, list[bytes]]:
        loop = asyncio.get_running_loop()
        context = zmq.Context()
        registry = FakeRegistry(loop, context, answer)
        runtime = WorkerRuntime(Counter(), registry_endpoint=registry.endpoint)  # with its own context
        try:
            with pytest.raises(RegistrationError, match="did not answer in 0.1 s"):
                await runtime._call_registry(registry_wire.Register(runtime.instance_id, "dynamo",
                                                                    runtime.endpoint, CARD), 0.1)
            await asyncio.sleep(0.4)  # the late reply went to the socket that timed out
            ack = await runtime._call_registry(registry_wire.Heartbeat(runtime.instance_id), 2.0)
        finally:
            await runtime.close()
            registry.close()
            context.term()
        return ack, [identity for identity, _ in registry.received]

    ack, identities = run(scenario())
    assert ack == registry_wire.Ack(ok=True, unknown_instance=True)
    assert len(identities) == 2 and identities[0] != identities[1]  # a new socket after the timeout


def test_kv_publisher_publishes_and_replays_from_a_sequence_number(run):
    async def scenario() -> tuple[list[list[bytes]], list[list[bytes]]]:
        loop = asyncio.get_running_loop()
        context = zmq.Context()
        publisher = KvEventPublisher(context)
        publisher.attach(loop)
        live: list[list[bytes]] = []
        sub = SocketDrainer(loop, open_socket(context, zmq.SUB, subscribe=publisher.topic,
                                              connect=publisher.endpoint), live.append)
        await asyncio.sleep(0.2)  # the subscription reaches the publisher
        for seq in range(3):
            publisher.stored([100 + seq], None, [seq] * 4, 4)
            publisher.flush()
        await until(lambda: len(live) == 3)
        replayed: list[list[bytes]] = []
        asking = SocketDrainer(loop, open_socket(context, zmq.DEALER, connect=publisher.replay_endpoint),
                               replayed.append)
        asking.sock.send_multipart([b"", kv_wire.encode_seq(1)])
        asking.after_send()
        await until(lambda: replayed and replayed[-1][1] == kv_wire.END_OF_REPLAY)
        asking.close()
        sub.close()
        publisher.close()
        context.term()
        return live, replayed

    live, replayed = run(scenario())
    assert [kv_wire.decode_seq(frames[1]) for frames in live] == [0, 1, 2]
    assert [frames[2] for frames in replayed[:-1]] == [frames[2] for frames in live[1:]]  # seq 1 and 2, as sent
    assert [kv_wire.decode_seq(frames[1]) for frames in replayed[:-1]] == [1, 2]
