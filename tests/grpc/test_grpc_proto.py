"""The committed generated modules are what ``scripts/gen-grpc`` makes from the .proto, and they coexist with
tritonclient's own ``inference.*`` definitions in one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("kserve_pb2.py", "kserve_pb2_grpc.py", "kserve_pb2.pyi")


def test_generated_modules_match_the_proto(tmp_path):
    subprocess.run([str(REPO / "scripts" / "gen-grpc"), str(tmp_path)], check=True, capture_output=True,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    for name in GENERATED:
        fresh = (tmp_path / "frontend" / "grpc" / "proto" / name).read_text()
        committed = (REPO / "frontend" / "grpc" / "proto" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen-grpc"


def test_messages_are_wire_compatible_with_tritonclient():
    from tritonclient.grpc import service_pb2 as triton_pb

    from frontend.grpc.proto import kserve_pb2 as pb

    ours = pb.ModelInferRequest(model_name="m", id="1", raw_input_contents=[b"\x01\x00\x00\x00a"])
    ours.inputs.add(name="text_input", datatype="BYTES", shape=[1, 1])
    ours.parameters["p"].int64_param = 3
    theirs = triton_pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert (theirs.model_name, theirs.id, list(theirs.inputs[0].shape)) == ("m", "1", [1, 1])
    assert theirs.parameters["p"].int64_param == 3
    config = pb.ModelConfigResponse(config=pb.ModelConfig(
        name="m", input=[pb.ModelInput(name="x", data_type=pb.TYPE_STRING, dims=[1], optional=True)],
        model_transaction_policy=pb.ModelTransactionPolicy(decoupled=True)))
    parsed = triton_pb.ModelConfigResponse.FromString(config.SerializeToString()).config
    assert parsed.input[0].optional and parsed.input[0].data_type == 13 and parsed.model_transaction_policy.decoupled
