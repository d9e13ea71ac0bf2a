"""KServe v2 tensors to a :class:`CompletionRequest`, and generated text to output tensors.

Input elements come from a tensor's typed ``contents`` or, when the request uses ``raw_input_contents``
(as tritonclient does), from that tensor's raw little-endian bytes; a raw BYTES element is a 4-byte
little-endian length followed by that many bytes. Every problem is an :class:`InvalidRequest` naming the
tensor and listing the expected inputs (INVALID_ARGUMENT on the wire).
"""

from __future__ import annotations

import math
import struct
from typing import Any, Sequence

import msgspec

from ..protocol.errors import InvalidRequest
from ..protocol.openai import CompletionRequest
from .proto import kserve_pb2 as pb
from .schema import (FINISH_REASON, INPUT_ALIASES, INPUTS, INPUTS_BY_NAME, OUTPUT_NAMES, TEXT_OUTPUT, TensorSpec,
                     expected_inputs)

# datatype -> (field of InferTensorContents, struct code of one raw element)
_NUMERIC = {"BOOL": ("bool_contents", "?"), "INT32": ("int_contents", "i"), "INT64": ("int64_contents", "q"),
            "FP32": ("fp32_contents", "f"), "FP64": ("fp64_contents", "d")}
_LENGTH = struct.Struct("<I")
FINAL_RESPONSE = "triton_final_response"


def _problem(message: str) -> InvalidRequest:
    return InvalidRequest(f"{message}; {expected_inputs()}")


def _raw_bytes_elements(raw: bytes, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _problem(f"input `{name}`: truncated length prefix in raw_input_contents")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _problem(f"input `{name}`: a BYTES element is longer than its raw_input_contents")
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def _raw_elements(raw: bytes, datatype: str, name: str) -> Sequence[Any]:
    if datatype == "BYTES":
        return _raw_bytes_elements(raw, name)
    code = _NUMERIC[datatype][1]
    size = struct.calcsize(code)
    if len(raw) % size:
        raise _problem(f"input `{name}`: {len(raw)} raw bytes are not a whole number of {datatype} elements")
    return struct.unpack(f"<{len(raw) // size}{code}", raw)


def _elements(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Sequence[Any]:
    if raw is not None:
        return _raw_elements(raw, tensor.datatype, tensor.name)
    field = "bytes_contents" if tensor.datatype == "BYTES" else _NUMERIC[tensor.datatype][0]
    return getattr(tensor.contents, field)


def _check_shape(tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec, count: int) -> None:
    if any(dim < 0 for dim in tensor.shape) or math.prod(tensor.shape) != count:
        raise _problem(f"input `{tensor.name}`: shape {list(tensor.shape)} does not match its {count} elements")
    if spec.scalar and count != 1:
        raise _problem(f"input `{tensor.name}` must hold exactly one element (shape [1] or [1, 1]), got {count}")


def _text(element: bytes, name: str) -> str:
    try:
        return element.decode()
    except UnicodeDecodeError:
        raise _problem(f"input `{name}` is not valid UTF-8") from None


def _spec(name: str) -> TensorSpec:
    spec = INPUTS_BY_NAME.get(INPUT_ALIASES.get(name, name))
    if spec is None:
        raise _problem(f"unknown input `{name}`")
    return spec


def _value(tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec, raw: bytes | None) -> Any:
    """The request-field value of one input tensor."""
    if tensor.datatype not in spec.datatypes:
        raise _problem(f"input `{tensor.name}` has datatype {tensor.datatype or '(none)'}, expected "
                       f"{' or '.join(spec.datatypes)}")
    elements = _elements(tensor, raw)
    _check_shape(tensor, spec, len(elements))
    if tensor.datatype == "BYTES":
        elements = [_text(element, tensor.name) for element in elements]
    return elements[0] if spec.scalar else list(elements)


def _fields(request: pb.ModelInferRequest) -> dict[str, Any]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise _problem(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    fields: dict[str, Any] = {}
    for index, tensor in enumerate(request.inputs):
        spec = _spec(tensor.name)
        if spec.field in fields:
            raise _problem(f"input `{tensor.name}` is given twice")
        fields[spec.field] = _value(tensor, spec, raw[index] if raw else None)
    for spec in INPUTS:
        if spec.required and spec.field not in fields:
            raise _problem(f"input `{spec.name}` is missing")
    return fields


def completion_request(request: pb.ModelInferRequest) -> CompletionRequest:
    """The OpenAI completion request the tensors describe (range checks as for HTTP)."""
    fields = _fields(request)
    fields["model"] = request.model_name
    try:
        return msgspec.convert(fields, CompletionRequest)
    except msgspec.ValidationError as exc:  # "Expected `int` >= 1 - at `$.max_tokens`"
        problem, _, where = str(exc).partition(" - at `$.")
        field = where.rstrip("`")
        name = next((spec.name for spec in INPUTS if spec.field == field), field)
        raise InvalidRequest(f"input `{name}`: {problem}", param=name) from None


def requested_outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    """The outputs to return: the ones asked for, else all; an unknown name is INVALID_ARGUMENT."""
    if not request.outputs:
        return OUTPUT_NAMES
    names = tuple(output.name for output in request.outputs)
    for name in names:
        if name not in OUTPUT_NAMES:
            raise InvalidRequest(f"unknown output `{name}`; available outputs: {', '.join(OUTPUT_NAMES)}")
    return names


class ResponseEncoder:
    """Builds the ModelInferResponses of one request: its id, its model, the outputs it asked for.

    In a stream (``decoupled``) every response carries Triton's ``triton_final_response`` parameter, true on
    the last one, so that clients of decoupled models know when a request is complete.
    """

    __slots__ = ("model_name", "request_id", "outputs", "raw", "decoupled")

    def __init__(self, request: pb.ModelInferRequest, *, decoupled: bool) -> None:
        self.model_name = request.model_name
        self.request_id = request.id
        self.outputs = requested_outputs(request)
        self.raw = bool(request.raw_input_contents)  # answer in the encoding the client used
        self.decoupled = decoupled

    def response(self, text: str, finish_reason: str | None) -> pb.ModelInferResponse:
        values = {TEXT_OUTPUT: text.encode(), FINISH_REASON: (finish_reason or "").encode()}
        response = pb.ModelInferResponse(model_name=self.model_name, model_version="1", id=self.request_id)
        for name in self.outputs:
            tensor = response.outputs.add(name=name, datatype="BYTES", shape=[1])
            if self.raw:
                response.raw_output_contents.append(_LENGTH.pack(len(values[name])) + values[name])
            else:
                tensor.contents.bytes_contents.append(values[name])
        if self.decoupled:
            response.parameters[FINAL_RESPONSE].bool_param = finish_reason is not None
        return response
