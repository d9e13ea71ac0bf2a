"""Which models the gRPC front door exposes, and how it describes them and itself.

Only models that serve completions are exposed (the tensors carry one raw prompt, there is no message
list); a chat-only model is NOT_FOUND here, as in Dynamo, and stays available on HTTP. Every model has
one version, "1"; asking for another version is NOT_FOUND too.
"""

from __future__ import annotations

from .. import __version__
from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..protocol.errors import ModelNotFound
from .proto import kserve_pb2 as pb
from .schema import CONFIG_TYPES, INPUTS, OUTPUTS

SERVER_NAME = "dynamo-py-frontend"
PLATFORM = "dynamo"
VERSION = "1"
EXTENSIONS = ("model_configuration",)


def exposed(model: ServedModel) -> bool:
    return "completions" in model.card.model_types


def exposed_model(gateway: Gateway, name: str, version: str = "") -> ServedModel:
    """The served model of that name and version; ModelNotFound (NOT_FOUND) otherwise."""
    model = gateway.models.models.get(name)
    if model is None or not exposed(model) or version not in ("", VERSION):
        raise ModelNotFound(name if version in ("", VERSION) else f"{name}` version `{version}")
    return model


def server_ready(gateway: Gateway) -> bool:
    """At least one exposed model has a live worker."""
    return any(exposed(model) and model.instance_ids for model in gateway.models.models.values())


def model_ready(gateway: Gateway, name: str, version: str) -> bool:
    try:
        return bool(exposed_model(gateway, name, version).instance_ids)
    except ModelNotFound:
        return False


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


def model_metadata(model: ServedModel) -> pb.ModelMetadataResponse:
    def tensors(specs) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatypes[0], shape=s.shape)
                for s in specs]

    return pb.ModelMetadataResponse(name=model.name, versions=[VERSION], platform=PLATFORM,
                                    inputs=tensors(INPUTS), outputs=tensors(OUTPUTS))


def model_config(model: ServedModel) -> pb.ModelConfigResponse:
    """Triton's model configuration: decoupled (a request may stream many responses), no batching."""
    inputs = [pb.ModelInput(name=s.name, data_type=CONFIG_TYPES[s.datatypes[0]], dims=s.shape, optional=not s.required)
              for s in INPUTS]
    outputs = [pb.ModelOutput(name=s.name, data_type=CONFIG_TYPES[s.datatypes[0]], dims=s.shape) for s in OUTPUTS]
    config = pb.ModelConfig(name=model.name, platform=PLATFORM, max_batch_size=0, input=inputs, output=outputs,
                            model_transaction_policy=pb.ModelTransactionPolicy(decoupled=True))
    return pb.ModelConfigResponse(config=config)
