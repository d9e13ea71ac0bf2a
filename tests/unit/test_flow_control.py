"""Flow control between the gateway and a worker over real sockets (frontend/gateway/engine_client.py and
frontend/worker/runtime.py): a request whose reader stops taking its outputs is paused on the worker past
``max_queued_tokens``, and resumed when the reader takes them; nothing is lost or reordered, whether the engine
stops generating (as the mock does) or the worker holds its outputs (an engine that cannot pause)."""

from __future__ import annotations

import asyncio

import pytest
import zmq
from async_support import until
from test_worker_runtime import CARD, FakeRegistry

from frontend.gateway.engine_client import EngineClient
from frontend.protocol import registry as registry_wire
from frontend.protocol.engine import GenerateRequest, StopConditions
from frontend.protocol.registry import Instance
from frontend.worker import Engine, WorkerRuntime

TOKENS = 400
MAX_QUEUED = 8


class Ticker(Engine):
    """Sends token 0, 1, ... one a millisecond; records pause calls; ``honours`` pauses or not."""

    def __init__(self, honours: bool) -> None:
        self.honours = honours
        self.paused = False
        self.pause_calls: list[bool] = []
        self.sent = 0
        self.tasks: list[asyncio.Task] = []

    def add_request(self, request, sink):
        self.tasks.append(asyncio.get_running_loop().create_task(self._generate(request, sink)))

    async def _generate(self, request, sink) -> None:
        for token in range(request.stop.max_tokens):
            while self.honours and self.paused:
                await asyncio.sleep(0.001)
            sink.send([token], "length" if token == request.stop.max_tokens - 1 else None)
            self.sent += 1
            await asyncio.sleep(0.001)

    def pause_request(self, request_id, paused):
        self.pause_calls.append(paused)
        self.paused = paused


@pytest.mark.parametrize("honours", [True, False], ids=["engine-pauses", "worker-holds"])
def test_a_reader_that_stops_pauses_the_worker_and_loses_nothing(run, honours):
    async def scenario() -> tuple[list[int], tuple[int, int, int], Ticker]:
        loop = asyncio.get_running_loop()
        context = zmq.Context()
        registry = FakeRegistry(loop, context, lambda message: registry_wire.Ack(ok=True, lease_ttl_s=30.0))
        engine = Ticker(honours)
        runtime = WorkerRuntime(engine, registry_endpoint=registry.endpoint, context=context)
        client = EngineClient(loop, MAX_QUEUED)
        try:
            await runtime.register_model(CARD)
            client.sync_instances([Instance("w1", runtime.endpoint, CARD)])
            stream = client.submit("w1", GenerateRequest("r1", [5], StopConditions(max_tokens=TOKENS)))
            await until(lambda: engine.pause_calls == [True])  # nobody reads: paused past MAX_QUEUED tokens
            await asyncio.sleep(0.05)  # what was in flight when the pause landed arrives
            at_pause = sum(len(output.token_ids) for output in stream._items)
            await asyncio.sleep(0.1)  # paused: nothing more comes (the engine stopped, or the worker holds it)
            queued = (at_pause, sum(len(output.token_ids) for output in stream._items), engine.sent)
            tokens: list[int] = []
            finished = False
            while not finished:
                for output in await stream.next():
                    tokens += output.token_ids
                    finished = output.finish_reason is not None
                await asyncio.sleep(0.002)  # a slow reader: the worker pauses and resumes over and over
        finally:
            client.close()
            await runtime.close()
            registry.close()
            context.term()
        return tokens, queued, engine

    tokens, (at_pause, while_paused, sent_while_paused), engine = run(scenario())
    assert tokens == list(range(TOKENS))
    assert at_pause < TOKENS // 2, at_pause  # past MAX_QUEUED by what was in flight, far from all of them
    assert while_paused == at_pause
    if honours:  # paused and resumed until the end
        assert engine.pause_calls[:2] == [True, False] and engine.pause_calls[-1] is False
    else:  # the engine generated on while paused (to the end); the worker held what it made
        assert engine.pause_calls[0] is True and sent_while_paused > while_paused and engine.sent == TOKENS
