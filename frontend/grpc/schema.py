"""The tensors a text-completion model takes and returns over KServe v2, declared once.

Request decoding (``tensors.py``), ``ModelMetadata`` and ``ModelConfig`` (``metadata.py``) all read these
tables, so what a model advertises is exactly what it accepts.
"""

from __future__ import annotations

from typing import NamedTuple

from .proto import kserve_pb2 as pb


class TensorSpec(NamedTuple):
    """One input or output tensor: its name, the request field it sets, accepted datatypes, shape."""

    name: str
    field: str  # CompletionRequest field an input sets ("" for outputs)
    datatypes: tuple[str, ...]  # accepted KServe datatypes; the first one is advertised
    shape: tuple[int, ...]  # advertised shape; (1,) is one element, (-1,) any number
    required: bool = False

    @property
    def scalar(self) -> bool:
        return self.shape == (1,)

    def describe(self) -> str:
        """``name (DTYPE|DTYPE[, list][, required])`` for error messages."""
        extras = "" if self.scalar else ", list"
        return f"{self.name} ({'|'.join(self.datatypes)}{extras}{', required' if self.required else ''})"


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_input", "prompt", ("BYTES",), (1,), required=True),
    TensorSpec("streaming", "stream", ("BOOL",), (1,)),
    TensorSpec("max_tokens", "max_tokens", ("INT32", "INT64"), (1,)),
    TensorSpec("temperature", "temperature", ("FP32", "FP64"), (1,)),
    TensorSpec("top_p", "top_p", ("FP32", "FP64"), (1,)),
    TensorSpec("top_k", "top_k", ("INT32", "INT64"), (1,)),
    TensorSpec("seed", "seed", ("INT64", "INT32"), (1,)),
    TensorSpec("ignore_eos", "ignore_eos", ("BOOL",), (1,)),
    TensorSpec("stop", "stop", ("BYTES",), (-1,)),
)
INPUT_ALIASES = {"stream": "streaming"}  # Dynamo accepts both names
INPUTS_BY_NAME = {spec.name: spec for spec in INPUTS}

TEXT_OUTPUT = "text_output"
FINISH_REASON = "finish_reason"
OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(TEXT_OUTPUT, "", ("BYTES",), (-1,)),
    TensorSpec(FINISH_REASON, "", ("BYTES",), (-1,)),
)
OUTPUT_NAMES = tuple(spec.name for spec in OUTPUTS)

CONFIG_TYPES = {"BOOL": pb.TYPE_BOOL, "INT32": pb.TYPE_INT32, "INT64": pb.TYPE_INT64, "FP32": pb.TYPE_FP32,
                "FP64": pb.TYPE_FP64, "BYTES": pb.TYPE_STRING}


def expected_inputs() -> str:
    """The accepted inputs, for INVALID_ARGUMENT messages."""
    return "expected inputs: " + ", ".join(spec.describe() for spec in INPUTS)
