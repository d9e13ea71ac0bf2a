"""KServe tensors to a completion request and back, without a server (the e2e tests cover the wire)."""

from __future__ import annotations

import struct

import pytest

from frontend.grpc.proto import kserve_pb2 as pb
from frontend.grpc.tensors import ResponseEncoder, completion_request, requested_outputs
from frontend.protocol.errors import InvalidRequest

CONTENTS = {"BOOL": "bool_contents", "INT32": "int_contents", "INT64": "int64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def request_with(*tensors: tuple[str, str, list, list[int] | None]) -> pb.ModelInferRequest:
    """Typed contents: (name, datatype, values, shape or None for [len(values)])."""
    request = pb.ModelInferRequest(model_name="tiny", id="7")
    for name, datatype, values, shape in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape or [len(values)])
        getattr(tensor.contents, CONTENTS[datatype]).extend(values)
    return request


def raw_request_with(*tensors: tuple[str, str, bytes, list[int]]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tiny")
    for name, datatype, raw, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


PROMPT = ("text_input", "BYTES", [b"hello"], None)


def test_every_optional_tensor_maps_to_its_request_field():
    request = completion_request(request_with(
        ("text_input", "BYTES", [b"hello"], [1, 1]), ("stream", "BOOL", [True], None),
        ("max_tokens", "INT64", [12], None), ("temperature", "FP64", [0.25], None), ("top_p", "FP32", [0.5], None),
        ("top_k", "INT32", [7], None), ("seed", "INT64", [2**40], None), ("ignore_eos", "BOOL", [True], None),
        ("stop", "BYTES", [b"a", b"b", b"c", b"d"], [2, 2])))
    assert (request.model, request.prompt, request.stream, request.max_tokens) == ("tiny", "hello", True, 12)
    assert (request.temperature, request.top_p, request.top_k, request.seed) == (0.25, 0.5, 7, 2**40)
    assert request.ignore_eos and request.stop == ["a", "b", "c", "d"]


def test_raw_numeric_and_bool_inputs():
    request = completion_request(raw_request_with(
        ("text_input", "BYTES", prefixed("héllo".encode()), [1]), ("max_tokens", "INT32", struct.pack("<i", 3), [1]),
        ("temperature", "FP32", struct.pack("<f", 0.5), [1]), ("ignore_eos", "BOOL", b"\x01", [1]),
        ("stop", "BYTES", prefixed(b"x", b"", b"yz"), [3])))
    assert (request.prompt, request.max_tokens, request.temperature, request.ignore_eos) == ("héllo", 3, 0.5, True)
    assert request.stop == ["x", "", "yz"]


@pytest.mark.parametrize("request_, problem", [
    (raw_request_with(("text_input", "BYTES", prefixed(b"a"), [1]), ("max_tokens", "INT64", b"\x01\x02\x03", [1])),
     "3 raw bytes are not a whole number of INT64 elements"),
    (pb.ModelInferRequest(model_name="tiny", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="text_input", datatype="BYTES", shape=[1])], raw_input_contents=[b"", b""]),
     "raw_input_contents has 2 entries for 1 inputs"),
    (request_with(("text_input", "BYTES", [b"a"], [-1])), "shape [-1]"),
    (request_with(PROMPT, ("max_tokens", "FP32", [1.0], None)), "datatype FP32, expected INT32 or INT64"),
    (request_with(PROMPT, ("streaming", "BOOL", [True], None), ("stream", "BOOL", [False], None)), "given twice"),
    (request_with(PROMPT, ("top_k", "INT32", [-2], None)), "input `top_k`"),
    (request_with(PROMPT, ("seed", "INT64", [1, 2], None)), "exactly one element"),
    (request_with(("text_input", "BYTES", [], [0])), "exactly one element"),
])
def test_malformed_tensors_are_invalid_requests(request_, problem):
    with pytest.raises(InvalidRequest) as excinfo:
        completion_request(request_)
    assert problem in excinfo.value.message


def test_range_errors_name_the_tensor():
    with pytest.raises(InvalidRequest) as excinfo:
        completion_request(request_with(PROMPT, ("top_p", "FP32", [2.0], None)))
    assert excinfo.value.param == "top_p" and excinfo.value.message.startswith("input `top_p`: Expected")


def test_requested_outputs():
    request = request_with(PROMPT)
    assert requested_outputs(request) == ("text_output", "finish_reason")
    request.outputs.add(name="finish_reason")
    assert requested_outputs(request) == ("finish_reason",)
    request.outputs.add(name="logits")
    with pytest.raises(InvalidRequest, match="unknown output `logits`"):
        requested_outputs(request)


def test_responses_use_the_clients_encoding_and_mark_the_final_one_in_streams():
    typed = ResponseEncoder(request_with(PROMPT), decoupled=False).response("héllo", None)
    assert typed.id == "7" and typed.model_version == "1" and not typed.raw_output_contents
    assert [list(t.contents.bytes_contents) for t in typed.outputs] == [["héllo".encode()], [b""]]
    assert "triton_final_response" not in typed.parameters

    raw = raw_request_with(("text_input", "BYTES", prefixed(b"a"), [1]))
    encoder = ResponseEncoder(raw, decoupled=True)
    middle, last = encoder.response("ab", None), encoder.response("", "length")
    assert list(middle.raw_output_contents) == [prefixed(b"ab"), prefixed(b"")]
    assert list(last.raw_output_contents) == [prefixed(b""), prefixed(b"length")]
    assert [t.shape for t in last.outputs] == [[1], [1]]
    assert not middle.parameters["triton_final_response"].bool_param
    assert last.parameters["triton_final_response"].bool_param
