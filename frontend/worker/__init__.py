"""Worker SDK: what an inference engine uses to be served by this frontend.

Typical use::

    runtime = WorkerRuntime(my_engine, registry_endpoint="tcp://127.0.0.1:5570")
    await runtime.serve(ModelCard(name="my-model", model_path="/models/my-model"))  # until SIGTERM/SIGINT
"""

from ..protocol.engine import EmbedRequest, GenerateRequest, ImageRequest, MediaItem, TokenLogprob, VideoRequest
from ..protocol.registry import ModelCard
from .runtime import Engine, RegistrationError, TokenSink, WorkerRuntime
from .unary import InvalidInput, NotServed, ProgressSink

__all__ = ["EmbedRequest", "Engine", "GenerateRequest", "ImageRequest", "InvalidInput", "MediaItem", "ModelCard",
           "NotServed", "ProgressSink", "RegistrationError", "TokenLogprob", "TokenSink", "VideoRequest",
           "WorkerRuntime"]
