"""Helpers of the KServe gRPC end-to-end tests: a daemon with ``--kserve-grpc-server``, request builders for
NVIDIA's ``tritonclient`` and for a raw ``grpc.aio`` client on the project's generated stubs."""

from __future__ import annotations

import queue
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import numpy as np
import tritonclient.grpc as triton
from e2e_support import Daemon, _Logged, free_port, wait_until

from frontend.grpc.proto import kserve_pb2 as pb
from frontend.grpc.proto.kserve_pb2_grpc import GRPCInferenceServiceStub

# optional input -> (datatype, numpy dtype)
TYPES = {"max_tokens": ("INT32", np.int32), "temperature": ("FP32", np.float32), "top_p": ("FP32", np.float32),
         "top_k": ("INT32", np.int32), "seed": ("INT64", np.int64), "ignore_eos": ("BOOL", np.bool_),
         "streaming": ("BOOL", np.bool_), "stream": ("BOOL", np.bool_)}


class GrpcDaemon(Daemon):
    """The daemon with its KServe gRPC server on a free port (and no embedding/image/video mock workers)."""

    def __init__(self, *extra: str, **kwargs: Any) -> None:
        self.grpc_port = free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        super().__init__("--kserve-grpc-server", "--kserve-grpc-port", str(self.grpc_port),
                         "--mock-extra-models", "none", *extra, **kwargs)

    def triton(self, **kwargs: Any) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.grpc_target, **kwargs)

    def wait_grpc_model(self, name: str, timeout: float = 20.0) -> None:
        """Wait until the gRPC server process sees the model with a live worker (its own model table)."""
        with self.triton() as client:
            wait_until(lambda: client.is_model_ready(name), timeout, f"model {name!r} ready over gRPC",
                       on_timeout=self.describe)


def inputs(prompt: str | bytes, *, stop: list[str] | None = None, **optional: Any) -> list[triton.InferInput]:
    """tritonclient inputs: ``text_input`` with shape [1], the optional scalars, ``stop`` as a list."""
    text = prompt if isinstance(prompt, bytes) else prompt.encode()
    result = [tensor("text_input", "BYTES", np.array([text], dtype=np.object_))]
    for name, value in optional.items():
        datatype, dtype = TYPES[name]
        result.append(tensor(name, datatype, np.array([value], dtype=dtype)))
    if stop is not None:
        result.append(tensor("stop", "BYTES", np.array([s.encode() for s in stop], dtype=np.object_)))
    return result


def tensor(name: str, datatype: str, value: np.ndarray) -> triton.InferInput:
    """One tritonclient input holding ``value`` (sent as raw_input_contents, as tritonclient does)."""
    tensor = triton.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


def text_of(result: triton.InferResult) -> tuple[str, str]:
    """(text_output, finish_reason) of a tritonclient result."""
    return result.as_numpy("text_output")[0].decode(), result.as_numpy("finish_reason")[0].decode()


def stream_results(client: triton.InferenceServerClient, requests: list[dict[str, Any]],
                   timeout: float = 30.0) -> list[tuple[Any, Any]]:
    """Send every request on one ModelStreamInfer stream; (result, error) pairs until each request's final
    response (``triton_final_response``) or error arrived."""
    received: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        for request in requests:
            client.async_stream_infer(**request)
        pairs, pending = [], len(requests)
        while pending:
            result, error = received.get(timeout=timeout)
            pairs.append((result, error))
            if error is not None or is_final(result):
                pending -= 1
        return pairs
    finally:
        client.stop_stream()


def is_final(result: triton.InferResult) -> bool:
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and parameters["triton_final_response"].bool_param


# ---- raw grpc.aio with the project's own stubs -------------------------------------------------------------


def raw_channel(daemon: GrpcDaemon) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(daemon.grpc_target)


def raw_stub(channel: grpc.aio.Channel) -> GRPCInferenceServiceStub:
    return GRPCInferenceServiceStub(channel)


def raw_request(model: str, prompt: str, request_id: str = "", shape: tuple[int, ...] = (1,),
                **scalars: Any) -> pb.ModelInferRequest:
    """A ModelInferRequest with typed ``contents`` (not raw bytes): BYTES prompt, scalar inputs by type."""
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="text_input", datatype="BYTES", shape=shape).contents.bytes_contents.append(
        prompt.encode())
    fields = {"BOOL": "bool_contents", "INT32": "int_contents", "INT64": "int64_contents", "FP32": "fp32_contents"}
    for name, value in scalars.items():
        datatype = TYPES[name][0]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1])
        getattr(tensor.contents, fields[datatype]).append(value)
    return request


def output_texts(response: pb.ModelInferResponse) -> dict[str, str]:
    """Outputs of a response with typed contents."""
    return {tensor.name: tensor.contents.bytes_contents[0].decode() for tensor in response.outputs}


def grpc_processes(daemon_pid: int) -> set[int]:
    """PIDs of the daemon's live gRPC server processes (children titled ``dyn-grpc``, zombies excluded)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if comm == "dyn-grpc" and int(ppid) == daemon_pid and state != "Z":
            found.add(int(entry.name))
    return found


class ChatOnlyWorker(_Logged):
    """``tests/e2e/grpc_chat_worker.py``: a worker whose model card serves chat only."""

    def __init__(self, registry_endpoint: str, name: str) -> None:
        self._spawn([sys.executable, str(Path(__file__).with_name("grpc_chat_worker.py")), registry_endpoint, name])


def advertised_http2_settings(port: int) -> dict[int, int]:
    """The SETTINGS the gRPC server sends on a new HTTP/2 connection (cleartext, prior knowledge)."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connection.data_to_send())
        while True:
            data = sock.recv(65536)
            assert data, "the server closed the connection before sending its SETTINGS"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    return {key: change.new_value for key, change in event.changed_settings.items()}
