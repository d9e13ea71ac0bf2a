"""How the gateway sends requests to a worker (frontend/gateway/engine_client.py): the requests submitted in one
event-loop turn go as the frames of one message; a message sent at once (an abort) never overtakes them."""

from __future__ import annotations

import asyncio

import zmq
from async_support import until
from test_worker_runtime import CARD

from frontend.gateway.engine_client import EngineClient
from frontend.protocol import engine as engine_wire
from frontend.protocol.engine import GenerateRequest, StopConditions
from frontend.protocol.registry import Instance
from frontend.transport.sockets import bind_random_port, open_socket
from frontend.transport.zmqloop import SocketDrainer


def _request(request_id: str) -> GenerateRequest:
    return GenerateRequest(request_id, [5, 6], StopConditions(max_tokens=4))


def test_one_turns_requests_are_one_message_and_an_abort_comes_after_its_request(run):
    async def scenario() -> list[list]:
        loop = asyncio.get_running_loop()
        context = zmq.Context()
        worker = open_socket(context, zmq.ROUTER)
        endpoint = bind_random_port(worker, "127.0.0.1")
        messages: list[list] = []
        drainer = SocketDrainer(loop, worker, lambda frames: messages.append(
            [engine_wire.to_worker_decoder.decode(frame) for frame in frames[1:]]))
        client = EngineClient(loop, context, 64)
        try:
            client.sync_instances([Instance("w1", endpoint, CARD)])
            for request_id in ("r1", "r2", "r3"):  # one turn
                client.submit("w1", _request(request_id))
            await until(lambda: len(messages) == 1)
            late = client.submit("w1", _request("r4"))
            client.release(late, abort=True)  # at once: the queued request goes first
            await until(lambda: len(messages) == 3)
            await asyncio.sleep(0.05)  # nothing else comes (the end-of-turn flush finds the queue sent)
        finally:
            client.close()
            drainer.close()
            context.term()
        return messages

    messages = run(scenario())
    assert [[type(m).__name__ + ":" + m.request_id for m in message] for message in messages] == [
        ["GenerateRequest:r1", "GenerateRequest:r2", "GenerateRequest:r3"],
        ["GenerateRequest:r4"], ["AbortRequest:r4"]]
