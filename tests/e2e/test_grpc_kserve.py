"""KServe v2 gRPC end to end with NVIDIA's tritonclient and a raw grpc.aio client: health, metadata and config,
unary and streamed inference, the optional tensors, error statuses, concurrency, HTTP serving alongside."""

from __future__ import annotations

import asyncio
import struct

import grpc
import httpx
import numpy as np
import pytest
from e2e_support import MODEL, wait_until
from grpc_support import (GrpcDaemon, inputs, is_final, output_texts, raw_channel, raw_request, raw_stub,
                          stream_results, tensor, text_of)
from tritonclient.utils import InferenceServerException

from frontend.grpc.proto import kserve_pb2 as pb

PROMPT = "Write a short paragraph about lighthouses."


@pytest.fixture(scope="module")
def server():
    daemon = GrpcDaemon(mock_workers=2)
    try:
        daemon.wait_ready()
        daemon.wait_grpc_model(MODEL)
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="module")
def paced(server):
    """The same model files behind a worker that takes ~0.6 ms per token, so a stream has many deltas."""
    server.start_mocker("--model-name", "tiny-paced", speedup="10")
    server.wait_model("tiny-paced")
    server.wait_grpc_model("tiny-paced")
    return "tiny-paced"


@pytest.fixture(scope="module")
def client(server):
    with server.triton() as triton_client:
        yield triton_client


def http_completion(server: GrpcDaemon, **body) -> dict:
    response = server.http.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT, **body})
    assert response.status_code == 200, response.text
    return response.json()


def status_of(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.status()


# ---- health, metadata, config ------------------------------------------------------------------------------


def test_health_rpcs(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(MODEL, "2")


def test_server_metadata(client):
    metadata = client.get_server_metadata()
    assert metadata.name == "dynamo-py-frontend" and metadata.version
    assert "model_configuration" in metadata.extensions


def test_model_metadata_and_config_describe_exactly_the_accepted_tensors(client):
    metadata = client.get_model_metadata(MODEL)
    assert (metadata.name, list(metadata.versions), metadata.platform) == (MODEL, ["1"], "dynamo")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("text_input", "BYTES", [1]), ("streaming", "BOOL", [1]), ("max_tokens", "INT32", [1]),
        ("temperature", "FP32", [1]), ("top_p", "FP32", [1]), ("top_k", "INT32", [1]), ("seed", "INT64", [1]),
        ("ignore_eos", "BOOL", [1]), ("stop", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("text_output", "BYTES", [-1]), ("finish_reason", "BYTES", [-1])]
    config = client.get_model_config(MODEL).config
    assert config.name == MODEL and config.max_batch_size == 0 and config.model_transaction_policy.decoupled
    required = {i.name for i in config.input if not i.optional}
    assert required == {"text_input"}
    assert [i.name for i in config.input] == [t.name for t in metadata.inputs]
    types = {i.name: i.data_type for i in config.input}
    assert types["text_input"] == 13 and types["streaming"] == 1 and types["max_tokens"] == 8  # STRING BOOL INT32
    assert [o.name for o in config.output] == ["text_output", "finish_reason"]


@pytest.mark.parametrize("call", ["get_model_metadata", "get_model_config"])
def test_unknown_model_metadata_is_not_found(client, call):
    with pytest.raises(InferenceServerException) as excinfo:
        getattr(client, call)("no-such-model")
    assert status_of(excinfo) == "StatusCode.NOT_FOUND"
    assert "no-such-model" in excinfo.value.message()


# ---- unary inference ---------------------------------------------------------------------------------------


def test_unary_infer_echoes_the_id(client):
    result = client.infer(MODEL, inputs(PROMPT, max_tokens=20), request_id="req-1")
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-1", MODEL, "1")
    text, finish_reason = text_of(result)
    assert text and finish_reason in ("stop", "length")


@pytest.mark.parametrize("n", [1, 17, 200])
def test_max_tokens_with_ignore_eos_gives_exactly_that_many_tokens(server, client, n):
    text, finish_reason = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=n, ignore_eos=True, seed=n)))
    assert finish_reason == "length"
    reference = http_completion(server, max_tokens=n, ignore_eos=True, seed=n)
    assert reference["usage"]["completion_tokens"] == n
    assert text == reference["choices"][0]["text"]


def test_sampling_tensors_reach_the_engine_like_http_fields(server, client):
    sampling = {"temperature": 0.5, "top_p": 0.9, "top_k": 20, "seed": 1234}
    text, _ = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=30, **sampling)))
    assert text == http_completion(server, max_tokens=30, **sampling)["choices"][0]["text"]
    other, _ = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=30, **{**sampling, "seed": 99})))
    assert other != text


def test_stop_strings_list(server, client):
    natural, _ = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=60, ignore_eos=True, seed=8)))
    words = natural.split(" ")
    stop = " " + " ".join(words[4:6])
    text, finish_reason = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=60, ignore_eos=True, seed=8,
                                                             stop=["never-appears", stop])))
    assert finish_reason == "stop"
    assert text == natural[:natural.find(stop)]


def test_stop_strings_over_the_limits_are_invalid_argument(client):
    """The stop input has the HTTP limits (--max-stop-strings, --max-stop-string-length; README "Limits")."""
    for stop, problem in ((["x"] * 17, "stop has 17 stop strings"), (["ok", "y" * 1025], "stop[1] is 1025")):
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer(MODEL, inputs(PROMPT, max_tokens=5, stop=stop))
        assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT"
        assert problem in excinfo.value.message()


def test_long_prompt_over_grpcs_default_message_limit_reaches_the_pipeline(client):
    """gRPC refuses messages over 4 MiB by default; the server takes what HTTP takes (--http-body-limit-mb)."""
    prompt = "lighthouse " * 500_000  # 5.5 MB: far over the model's context window
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer(MODEL, inputs(prompt, max_tokens=5), client_timeout=60)
    assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT"
    assert "context length" in excinfo.value.message()


# ---- streamed inference ------------------------------------------------------------------------------------


def test_stream_sends_one_response_per_delta_ending_with_the_finish_reason(client, paced):
    request = {"model_name": paced, "request_id": "s-1",
               "inputs": inputs(PROMPT, max_tokens=40, ignore_eos=True, seed=3, streaming=True)}
    pairs = stream_results(client, [request])
    assert all(error is None for _, error in pairs), pairs
    results = [result for result, _ in pairs]
    assert len(results) > 3
    assert {r.get_response().id for r in results} == {"s-1"}
    texts = [text_of(r) for r in results]
    assert [finish for _, finish in texts] == [""] * (len(texts) - 1) + ["length"]
    assert [is_final(r) for r in results] == [False] * (len(results) - 1) + [True]
    unary, _ = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=40, ignore_eos=True, seed=3)))
    assert "".join(text for text, _ in texts) == unary


@pytest.mark.parametrize("flag", [{}, {"streaming": False}])
def test_stream_without_streaming_folds_into_one_response(client, flag):
    request = {"model_name": MODEL, "request_id": "folded",
               "inputs": inputs(PROMPT, max_tokens=25, ignore_eos=True, seed=4, **flag)}
    [(result, error)] = stream_results(client, [request])
    assert error is None and is_final(result)
    unary = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=25, ignore_eos=True, seed=4)))
    assert text_of(result) == unary == (unary[0], "length")


def test_stream_accepts_the_stream_alias(client, paced):
    request = {"model_name": paced, "inputs": inputs(PROMPT, max_tokens=20, ignore_eos=True, stream=True)}
    pairs = stream_results(client, [request])
    assert len(pairs) > 3 and all(error is None for _, error in pairs)


async def _errors_then_success(server: GrpcDaemon) -> list[pb.ModelStreamInferResponse]:
    """An unknown model, then a bad temperature, then a good request, each sent after the previous answer."""
    bad_temperature = raw_request(MODEL, PROMPT, "b", max_tokens=5)
    bad_temperature.inputs.add(name="temperature", datatype="FP32", shape=[1]).contents.fp32_contents.append(7.0)
    requests = [raw_request("no-such-model", PROMPT, "a"), bad_temperature,
                raw_request(MODEL, PROMPT, "c", max_tokens=5, ignore_eos=True, streaming=True)]
    outbox: asyncio.Queue = asyncio.Queue()
    await outbox.put(requests.pop(0))

    async def send():
        while (request := await outbox.get()) is not None:
            yield request

    replies = []
    async with raw_channel(server) as channel:
        async for reply in raw_stub(channel).ModelStreamInfer(send()):
            replies.append(reply)
            if reply.error_message or reply.infer_response.parameters["triton_final_response"].bool_param:
                await outbox.put(requests.pop(0) if requests else None)
    return replies


def test_errors_inside_a_stream_do_not_end_it(server):
    replies = asyncio.run(_errors_then_success(server))
    first, second, *rest = replies
    assert first.infer_response.id == "a" and "does not exist" in first.error_message
    assert second.infer_response.id == "b" and "temperature" in second.error_message
    assert rest and all(not r.error_message and r.infer_response.id == "c" for r in rest)
    assert output_texts(rest[-1].infer_response)["finish_reason"] == "length"


def test_tritonclient_stream_callback_gets_errors_and_results(client):
    pairs = stream_results(client, [
        {"model_name": "no-such-model", "inputs": inputs(PROMPT)},
        {"model_name": MODEL, "inputs": inputs(PROMPT, max_tokens=5, ignore_eos=True), "request_id": "ok"}])
    [error] = [error for _, error in pairs if error is not None]
    assert "does not exist" in error.message()
    [result] = [result for result, error in pairs if error is None]
    assert result.get_response().id == "ok" and text_of(result)[1] == "length"


def test_infer_with_streaming_true_needs_the_stream_rpc(client):
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer(MODEL, inputs(PROMPT, streaming=True))
    assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT"
    assert "ModelStreamInfer" in excinfo.value.message()


# ---- errors ------------------------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("no-such-model", inputs(PROMPT))
    assert status_of(excinfo) == "StatusCode.NOT_FOUND"


BYTES_X = np.array([b"x"], dtype=np.object_)


@pytest.mark.parametrize("tensors, problem, lists_expected", [
    (lambda: inputs(PROMPT) + [tensor("prompt", "BYTES", BYTES_X)], "unknown input `prompt`", True),
    (lambda: [tensor("text_input", "INT32", np.array([1], dtype=np.int32))], "datatype INT32", True),
    (lambda: inputs(PROMPT, max_tokens=5)[1:], "input `text_input` is missing", True),
    (lambda: inputs(PROMPT) + [tensor("text_input", "BYTES", BYTES_X)], "given twice", True),
    (lambda: [tensor("text_input", "BYTES", np.array([b"a", b"b"], dtype=np.object_))], "exactly one", True),
    (lambda: inputs(b"\xff\xfe"), "UTF-8", True),
    (lambda: inputs(PROMPT, temperature=3.0), "input `temperature`", False),
    (lambda: inputs(PROMPT, max_tokens=0), "input `max_tokens`", False),
    (lambda: inputs(PROMPT, max_tokens=100_000), "context length", False),
])
def test_malformed_inputs_are_invalid_argument(client, tensors, problem, lists_expected):
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer(MODEL, tensors())
    assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT"
    message = excinfo.value.message()
    assert problem in message, message
    assert ("expected inputs: text_input (BYTES, required), streaming (BOOL), max_tokens (INT32|INT64)"
            in message) == lists_expected, message


def test_no_live_worker_is_unavailable(client):
    """A request pinned to a worker instance that is not there (as with HTTP's x-worker-instance-id)."""
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer(MODEL, inputs(PROMPT), headers={"x-worker-instance-id": "not-a-worker"})
    assert status_of(excinfo) == "StatusCode.UNAVAILABLE"


# ---- raw grpc.aio client -----------------------------------------------------------------------------------


async def _raw_rpcs(server: GrpcDaemon) -> None:
    async with raw_channel(server) as channel:
        stub = raw_stub(channel)
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
        assert (await stub.ModelReady(pb.ModelReadyRequest(name=MODEL))).ready
        assert (await stub.ServerMetadata(pb.ServerMetadataRequest())).name == "dynamo-py-frontend"
        assert (await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))).inputs[0].name == "text_input"
        assert (await stub.ModelConfig(pb.ModelConfigRequest(name=MODEL))).config.input[0].data_type == pb.TYPE_STRING
        request = raw_request(MODEL, PROMPT, "raw-1", shape=(1, 1), max_tokens=12, ignore_eos=True)
        response = await stub.ModelInfer(request)
        assert response.id == "raw-1" and not response.raw_output_contents  # typed contents in, typed out
        assert output_texts(response)["finish_reason"] == "length"
        request.outputs.add(name="finish_reason")
        only = await stub.ModelInfer(request)
        assert [t.name for t in only.outputs] == ["finish_reason"]
        request.outputs.add(name="logits")
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stub.ModelInfer(request)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "logits" in excinfo.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stub.ModelMetadata(pb.ModelMetadataRequest(name="no-such-model"))
        assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


def test_every_rpc_with_a_raw_grpc_client(server):
    asyncio.run(_raw_rpcs(server))


async def _raw_request_with(server: GrpcDaemon, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    async with raw_channel(server) as channel:
        return await raw_stub(channel).ModelInfer(request)


def test_raw_input_contents_with_length_prefixes(server):
    prompt = PROMPT.encode()
    request = pb.ModelInferRequest(model_name=MODEL, id="raw-bytes")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    request.inputs.add(name="max_tokens", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<I", len(prompt)) + prompt, struct.pack("<q", 9)])
    response = asyncio.run(_raw_request_with(server, request))
    assert [t.name for t in response.outputs] == ["text_output", "finish_reason"]
    finish = response.raw_output_contents[1]  # answered in the encoding the client used
    assert finish == struct.pack("<I", 6) + b"length"


@pytest.mark.parametrize("raw, shape, problem", [
    (b"\x05\x00", [1], "truncated length prefix"),
    (struct.pack("<I", 50) + b"short", [1], "longer than"),
    (struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b", [2], "exactly one element"),
    (struct.pack("<I", 1) + b"a", [2], "shape [2]"),
])
def test_malformed_raw_input_is_invalid_argument(server, raw, shape, problem):
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="text_input", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(raw)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        asyncio.run(_raw_request_with(server, request))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in excinfo.value.details(), excinfo.value.details()


# ---- concurrency, HTTP alongside, metrics ------------------------------------------------------------------


async def _one_stream(stub, seeds: list[int]) -> dict[str, str]:
    """Several requests on one raw stream; the joined text per request id."""

    async def requests():
        for seed in seeds:
            yield raw_request(MODEL, PROMPT, f"seed-{seed}", max_tokens=30, ignore_eos=True, seed=seed,
                              streaming=True)

    texts: dict[str, str] = {}
    finished = set()
    async for reply in stub.ModelStreamInfer(requests()):
        assert not reply.error_message, reply.error_message
        response = reply.infer_response
        outputs = output_texts(response)
        texts[response.id] = texts.get(response.id, "") + outputs["text_output"]
        if outputs["finish_reason"]:
            assert outputs["finish_reason"] == "length"
            finished.add(response.id)
    assert finished == set(texts)
    return texts


async def _concurrent_streams_and_http(server: GrpcDaemon) -> tuple[list[dict[str, str]], list[int]]:
    async with raw_channel(server) as channel, httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        stub = raw_stub(channel)
        streams = [_one_stream(stub, [10 * i + j for j in range(4)]) for i in range(8)]
        posts = [http.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 30,
                                                    "ignore_eos": True, "seed": i}) for i in range(16)]
        results = await asyncio.gather(*streams, *posts)
    return results[:8], [r.status_code for r in results[8:]]


def test_concurrent_streams_while_http_serves(server, client):
    streams, http_statuses = asyncio.run(_concurrent_streams_and_http(server))
    assert http_statuses == [200] * 16
    joined = {key: text for texts in streams for key, text in texts.items()}
    assert len(joined) == 32
    for seed in (0, 13, 31, 72):
        unary, _ = text_of(client.infer(MODEL, inputs(PROMPT, max_tokens=30, ignore_eos=True, seed=seed)))
        assert joined[f"seed-{seed}"] == unary


def test_grpc_requests_are_in_the_http_metrics(server, client):
    client.infer(MODEL, inputs(PROMPT, max_tokens=3))
    stream_results(client, [{"model_name": MODEL, "inputs": inputs(PROMPT, max_tokens=3, streaming=True)}])

    def recorded() -> bool:
        text = server.http.get("/metrics").text
        return all(f'endpoint="{endpoint}"' in text for endpoint in ("grpc_model_infer", "grpc_model_stream_infer"))

    wait_until(recorded, 10.0, "gRPC requests in /metrics")
    text = server.http.get("/metrics").text
    line = next(line for line in text.splitlines() if line.startswith("dynamo_frontend_requests_total")
                and 'endpoint="grpc_model_stream_infer"' in line and 'status="success"' in line)
    assert 'request_type="stream"' in line
