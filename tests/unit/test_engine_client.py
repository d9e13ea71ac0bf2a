"""How the gateway talks to a worker (frontend/gateway/engine_client.py), against a worker played by the test: the
requests submitted in one event-loop turn go in one write; a message sent at once (an abort) never overtakes
them; a lost connection fails the requests on it at once, and a worker that stops answering heartbeats is
dropped; both come back when the worker answers again."""

from __future__ import annotations

import asyncio

import pytest
from async_support import until
from framed_peer import FramedPeer, FramedServer
from test_worker_runtime import CARD

from frontend.gateway import engine_client
from frontend.gateway.engine_client import EngineClient
from frontend.protocol import engine as engine_wire
from frontend.protocol.engine import GenerateRequest, OutputBatch, Ping, Pong, RequestOutput, StopConditions
from frontend.protocol.errors import WorkerGone
from frontend.protocol.registry import Instance


def _request(request_id: str) -> GenerateRequest:
    return GenerateRequest(request_id, [5, 6], StopConditions(max_tokens=4))


class CountingTransport:
    """A transport that counts its writes (what the worker cannot see: TCP may join or split them)."""

    def __init__(self, transport) -> None:
        self._transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


async def _messages(peer: FramedPeer, into: list) -> None:
    while (payload := await peer.read()) is not None:
        into.append(engine_wire.to_worker_decoder.decode(payload))


def test_one_turns_requests_are_one_write_and_an_abort_comes_after_its_request(run):
    async def scenario() -> tuple[list, int]:
        loop = asyncio.get_running_loop()
        worker = await FramedServer().start()
        client = EngineClient(loop, 64)
        received: list = []
        try:
            client.sync_instances([Instance("w1", worker.endpoint, CARD)])
            connection = client.connections["w1"]
            await until(lambda: worker.peers and connection.transport is not None)
            counting = connection.transport = CountingTransport(connection.transport)
            reading = loop.create_task(_messages(worker.peers[0], received))
            for request_id in ("r1", "r2", "r3"):  # one turn
                client.submit("w1", _request(request_id))
            await until(lambda: len(received) == 3)
            writes_for_one_turn = counting.writes
            late = client.submit("w1", _request("r4"))
            client.release(late, abort=True)  # at once: the queued request goes first
            await until(lambda: len(received) == 5)
            await asyncio.sleep(0.05)  # nothing else comes (the end-of-turn flush finds the queue sent)
            reading.cancel()
        finally:
            client.close()
            worker.close()
        return received, writes_for_one_turn

    received, writes_for_one_turn = run(scenario())
    assert writes_for_one_turn == 1
    assert [type(m).__name__ + ":" + m.request_id for m in received if not isinstance(m, Ping)] == [
        "GenerateRequest:r1", "GenerateRequest:r2", "GenerateRequest:r3", "GenerateRequest:r4", "AbortRequest:r4"]


def test_a_lost_connection_fails_its_requests_at_once_and_the_worker_is_back_when_it_answers(run):
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = await FramedServer().start()
        client = EngineClient(loop, 64)
        try:
            client.sync_instances([Instance("w1", worker.endpoint, CARD)])
            stream = client.submit("w1", _request("r1"))
            await until(lambda: worker.peers)
            peer = worker.peers[0]
            assert isinstance(engine_wire.to_worker_decoder.decode(await peer.read()), GenerateRequest)
            peer.send(engine_wire.encoder.encode(OutputBatch([RequestOutput("r1", [9])])))
            assert [output.token_ids for output in await stream.next()] == [[9]]
            peer.close()  # the worker's process died: its kernel closed the connection
            with pytest.raises(WorkerGone):
                await asyncio.wait_for(stream.next(), 1.0)
            assert "w1" in client.unreachable
            await until(lambda: "w1" not in client.unreachable)  # it reconnected (the port still listens)
            assert len(worker.peers) == 2
        finally:
            client.close()
            worker.close()

    run(scenario())


def test_a_worker_that_stops_answering_heartbeats_is_dropped(run, monkeypatch):
    monkeypatch.setattr(engine_client, "HEARTBEAT_IVL_S", 0.05)
    monkeypatch.setattr(engine_client, "HEARTBEAT_TIMEOUT_S", 0.15)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        worker = await FramedServer().start()
        client = EngineClient(loop, 64)
        answering = True

        async def answer_pings(peer: FramedPeer) -> None:
            while (payload := await peer.read()) is not None:
                if answering and isinstance(engine_wire.to_worker_decoder.decode(payload), Ping):
                    peer.send(engine_wire.encoder.encode(Pong()))

        try:
            client.sync_instances([Instance("w1", worker.endpoint, CARD)])
            stream = client.submit("w1", _request("r1"))
            await until(lambda: worker.peers)
            answers = loop.create_task(answer_pings(worker.peers[0]))
            await asyncio.sleep(0.5)  # ten heartbeats answered: still up
            assert "w1" not in client.unreachable and not stream._failure
            answering = False  # the process stopped (SIGSTOP, a hung host): its kernel keeps the connection
            stopped_at = loop.time()
            with pytest.raises(WorkerGone):
                await asyncio.wait_for(stream.next(), 2.0)
            answers.cancel()
            assert "w1" in client.unreachable
            return loop.time() - stopped_at
        finally:
            client.close()
            worker.close()

    assert run(scenario()) >= 0.1  # dropped for its silence, after the timeout and not before


def test_a_direct_reader_gets_outputs_only_while_the_reader_waits_with_nothing_queued(run):
    """``RequestStream.direct`` (a streamed response writing token events where they arrive) is offered an output
    only when the reader waits with nothing queued, so that nothing it writes overtakes what the reader holds."""
    async def scenario() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        client = EngineClient(loop, 64)
        stream = engine_client.RequestStream(client, "r1", "w1")
        offered: list = []
        stream.direct = lambda output: offered.append(output.token_ids) or output.token_ids != [3]
        stream.push(RequestOutput("r1", [1]))  # the reader is not waiting: queued
        read = [[o.token_ids for o in await stream.next()]]
        reading = loop.create_task(stream.next())
        await asyncio.sleep(0)  # the reader waits now
        stream.push(RequestOutput("r1", [2]))  # taken directly: the reader sleeps on
        stream.push(RequestOutput("r1", [3]))  # refused by direct: queued, the reader wakes
        stream.push(RequestOutput("r1", [4]))  # something is queued: not offered
        read.append([o.token_ids for o in await reading])
        client.close()
        return offered, read

    offered, read = run(scenario())
    assert offered == [[2], [3]]
    assert read == [[[1]], [[3], [4]]]


class TakingPlain:
    """A stand-in for ``PlainTokens.take``: takes every output but those of token 3."""

    def __init__(self) -> None:
        self.taken: list = []

    def take(self, output: RequestOutput) -> bool:
        if output.token_ids == [3]:
            return False
        self.taken.append(output.token_ids)
        return True


def test_a_plain_writer_is_offered_a_messages_outputs_only_while_the_reader_waits_with_nothing_queued(run):
    """``RequestStream.plain`` is offered each output of a worker's message the same way ``direct`` is: what it
    takes does not wake the reader; what it refuses, and all that follows while that is queued, is queued."""
    async def scenario() -> tuple[list, list, list]:
        loop = asyncio.get_running_loop()
        client = EngineClient(loop, 64)
        stream = client.streams["r1"] = engine_client.RequestStream(client, "r1", "w1")
        plain = stream.plain = TakingPlain()

        def arrive(*token_ids: list[int]) -> None:
            batch = OutputBatch([RequestOutput("r1", ids) for ids in token_ids])
            client._on_frame(memoryview(engine_wire.encoder.encode(batch)))

        arrive([1])  # the reader is not waiting: queued
        read = [[o.token_ids for o in await stream.next()]]
        reading = loop.create_task(stream.next())
        await asyncio.sleep(0)  # the reader waits now
        arrive([2], [3], [4])  # 2 taken; 3 refused: queued, the reader wakes; 4 after it: queued
        read.append([o.token_ids for o in await reading])
        taken_while_busy = list(plain.taken)
        client.close()
        return taken_while_busy, read, plain.taken

    taken, read, _ = run(scenario())
    assert taken == [[2]]
    assert read == [[[1]], [[3], [4]]]
