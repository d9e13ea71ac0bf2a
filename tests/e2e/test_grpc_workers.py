"""KServe gRPC with external workers: chat-only models, client cancellation aborting the worker request, a
worker dying mid-request, several gRPC server processes (one restarted after a crash), the HTTP/2 window and
message-size settings.

One daemon without built-in workers, with two gRPC server processes sharing the port, a fixed stream window
and a 1 MiB body limit; every test uses its own model name. The first test relies on no other model being
registered yet.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
import time

import grpc
import pytest
from e2e_support import wait_routing_load_released, wait_until
from grpc_support import (ChatOnlyWorker, GrpcDaemon, advertised_http2_settings, grpc_processes, inputs, raw_channel,
                          raw_request, raw_stub, stream_results, text_of)
from h2.settings import SettingCodes
from tritonclient.utils import InferenceServerException

LEASE_TTL_S = 2.0
STREAM_WINDOW = 1 << 20
PROMPT = "Go on for a long time."
LONG = {"max_tokens": 20000, "ignore_eos": True}  # minutes of work at ~6 ms per token unless aborted


@pytest.fixture(scope="module")
def bare():
    server = GrpcDaemon("--kserve-grpc-workers", "2", "--grpc-initial-stream-window-size", str(STREAM_WINDOW),
                        "--http-body-limit-mb", "1",
                        mock_workers=0, lease_ttl_s=str(LEASE_TTL_S))
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def client(bare):
    with bare.triton() as triton_client:
        yield triton_client


def test_chat_only_models_are_not_exposed_over_grpc(bare, client):
    worker = ChatOnlyWorker(bare.registry_endpoint, "chatty")
    try:
        bare.wait_model("chatty")
        assert bare.model_ids() == ["chatty"]  # served over HTTP ...
        assert not client.is_model_ready("chatty")  # ... but not over gRPC
        assert not client.is_server_ready()  # no model is served over gRPC
        for call in (client.get_model_metadata, client.get_model_config):
            with pytest.raises(InferenceServerException) as excinfo:
                call("chatty")
            assert excinfo.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer("chatty", inputs("hi"))
        assert excinfo.value.status() == "StatusCode.NOT_FOUND"
    finally:
        worker.close()


@pytest.fixture(scope="module")
def single_slot(bare):
    """A realistic-speed worker that runs one sequence at a time: an unaborted request blocks the next."""
    bare.start_mocker("--model-name", "abortee", "--max-num-seqs", "1", speedup="1")
    bare.wait_model("abortee")
    bare.wait_grpc_model("abortee")
    return "abortee"


def short_request(bare: GrpcDaemon, model: str, timeout: float = 20.0) -> float:
    with bare.triton() as fresh:
        start = time.monotonic()
        text, finish_reason = text_of(fresh.infer(model, inputs("hi", max_tokens=5, ignore_eos=True),
                                                  client_timeout=timeout))
    assert finish_reason == "length"
    return time.monotonic() - start


def assert_slot_free(bare: GrpcDaemon, model: str, what: str) -> None:
    try:
        elapsed = short_request(bare, model)
    except InferenceServerException as exc:
        pytest.fail(f"a 5-token request failed ({exc}): {what} kept the worker busy")
    assert elapsed < 8, f"the next request took {elapsed:.1f} s: {what} kept the worker busy"


def assert_slot_taken(bare: GrpcDaemon, model: str) -> None:
    """Precondition of the cancellation tests: the long request really holds the only slot."""
    with pytest.raises(InferenceServerException) as excinfo:
        short_request(bare, model, timeout=1.5)
    assert excinfo.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_cancelled_stream_aborts_the_worker_request(bare, single_slot):
    assert_slot_free(bare, single_slot, "an earlier request")
    received: queue.Queue = queue.Queue()
    with bare.triton() as streamer:
        streamer.start_stream(callback=lambda result, error: received.put((result, error)))
        streamer.async_stream_infer(single_slot, inputs(PROMPT, streaming=True, **LONG))
        for _ in range(3):
            result, error = received.get(timeout=20)
            assert error is None and text_of(result)[1] == ""
        assert_slot_taken(bare, single_slot)
        streamer.stop_stream(cancel_requests=True)
    assert_slot_free(bare, single_slot, "the cancelled stream")


def test_cancelled_unary_request_aborts_the_worker_request(bare, client, single_slot):
    assert_slot_free(bare, single_slot, "an earlier request")
    outcome: queue.Queue = queue.Queue()
    call = client.async_infer(single_slot, inputs(PROMPT, **LONG), callback=lambda result, error: outcome.put(error))
    time.sleep(0.5)
    assert_slot_taken(bare, single_slot)
    call.cancel()
    assert outcome.get(timeout=10).status() == "StatusCode.CANCELLED"
    assert_slot_free(bare, single_slot, "the cancelled unary request")


def test_deadline_exceeded_aborts_the_worker_request(bare, single_slot):
    assert_slot_free(bare, single_slot, "an earlier request")
    with bare.triton() as impatient, pytest.raises(InferenceServerException) as excinfo:
        impatient.infer(single_slot, inputs(PROMPT, **LONG), client_timeout=1.0)
    assert excinfo.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert_slot_free(bare, single_slot, "the request past its deadline")


@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelStreamInfer"])
def test_client_gone_before_the_first_response_releases_everything(bare, single_slot, rpc):
    """The client sends a long request and closes its channel at once: whatever the server was doing when it
    noticed, the worker's request is aborted and the routing load counters are back to 0."""
    assert_slot_free(bare, single_slot, "an earlier request")

    async def hang_up() -> None:
        for _ in range(3):
            channel = raw_channel(bare)
            stub = raw_stub(channel)
            request = raw_request(single_slot, PROMPT, max_tokens=20000, ignore_eos=True)
            if rpc == "ModelInfer":
                call = stub.ModelInfer(request)
            else:
                call = stub.ModelStreamInfer(iter([request]))
            await asyncio.sleep(0.05)  # on its way to the server, not answered yet
            await channel.close()  # cancels the call
            assert call.cancelled() or call.done()

    asyncio.run(hang_up())
    wait_routing_load_released(bare, single_slot, f"{rpc} calls abandoned before the first response")
    assert_slot_free(bare, single_slot, f"{rpc} calls abandoned before the first response")


def test_requests_in_flight_on_a_killed_worker_fail_cleanly(bare):
    """Unary: UNAVAILABLE. Stream: an error_message, and the stream still serves the next request."""
    victim = bare.start_mocker("--model-name", "victim", speedup="1")
    bare.wait_model("victim")
    bare.wait_grpc_model("victim")
    unary: queue.Queue = queue.Queue()
    with bare.triton() as other:
        other.async_infer("victim", inputs(PROMPT, **LONG), callback=lambda result, error: unary.put(error))
        received: queue.Queue = queue.Queue()
        other.start_stream(callback=lambda result, error: received.put((result, error)))
        other.async_stream_infer("victim", inputs(PROMPT, streaming=True, **LONG))
        assert received.get(timeout=20)[1] is None
        victim.kill()
        killed_at = time.monotonic()
        error = unary.get(timeout=LEASE_TTL_S + 8)
        assert error.status() == "StatusCode.UNAVAILABLE" and "went away" in error.message()
        while (reply := received.get(timeout=LEASE_TTL_S + 8))[1] is None:
            pass
        assert "went away" in str(reply[1])
        assert time.monotonic() - killed_at <= LEASE_TTL_S + 6
        # the stream is still open; the dead worker is not routed to (its lease may not have expired yet: then the
        # model is still listed, with no reachable worker)
        other.async_stream_infer("victim", inputs(PROMPT))
        refused = str(received.get(timeout=10)[1])
        assert "does not exist" in refused or "no live worker serves model" in refused, refused
        other.stop_stream()


def test_several_grpc_processes_share_the_port_and_a_dead_one_is_replaced(bare):
    bare.start_mocker("--model-name", "shared")
    bare.wait_model("shared")
    before = grpc_processes(bare.pid)
    assert len(before) == 2, before
    os.kill(min(before), signal.SIGKILL)
    wait_until(lambda: len(grpc_processes(bare.pid) - before) == 1 and len(grpc_processes(bare.pid)) == 2,
               30.0, "the killed gRPC server process to be replaced",
               on_timeout=lambda: f"dyn-grpc now: {grpc_processes(bare.pid)}, before: {before}\n{bare.describe()}")
    bare.wait_grpc_model("shared")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with bare.triton() as own:  # a connection of its own: the kernel spreads them over the processes
                for _ in range(3):
                    pairs = stream_results(own, [{"model_name": "shared",
                                                  "inputs": inputs(PROMPT, max_tokens=20, streaming=True)}])
                    assert all(error is None for _, error in pairs)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]


def test_the_configured_stream_window_is_advertised(bare):
    assert advertised_http2_settings(bare.grpc_port)[SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW


def test_a_message_over_the_body_limit_is_resource_exhausted(bare, client):
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("any-model", inputs("x" * (1 << 20)))
    assert excinfo.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_grpc_status_of_an_unknown_rpc_is_unimplemented(bare):
    with grpc.insecure_channel(bare.grpc_target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex")
        with pytest.raises(grpc.RpcError) as excinfo:
            call(b"", timeout=10)
    assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED
