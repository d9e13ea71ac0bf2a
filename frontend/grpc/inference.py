"""One KServe inference request on the pipeline HTTP uses: tensors, completion request, generation, responses.

The tensors become a :class:`CompletionRequest`; from there everything is shared with ``/v1/completions``:
tokenization in the pool, the generation budget, the engine request, routing, the request plane and the
output pipeline (:class:`~frontend.pipeline.generation.Generation`). The handler owns the generation with
``async with inference.generation``: the worker request is aborted when the RPC is cancelled (the handler's
task is cancelled while it waits for output) or the handler leaves for any other reason.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncIterator, Mapping

import msgspec

from ..gateway.state import Gateway
from ..pipeline.generation import Generation, collect, engine_request, reject_unsupported
from ..pipeline.nvext import extensions
from ..pipeline.prepare import check_limits, require_live
from ..protocol.errors import InvalidRequest
from .metadata import exposed_model
from .proto import kserve_pb2 as pb
from .tensors import ResponseEncoder, completion_request


class Inference:
    """A submitted request: its generation, whether the client wants deltas, how to encode responses."""

    __slots__ = ("generation", "encoder", "stream")

    def __init__(self, generation: Generation, encoder: ResponseEncoder, stream: bool) -> None:
        self.generation = generation
        self.encoder = encoder
        self.stream = stream


async def start(gateway: Gateway, request: pb.ModelInferRequest, headers: Mapping[str, str],
                *, in_stream: bool) -> Inference:
    """Validate, tokenize, route and submit; raises a RequestError before anything reached a worker.

    ``in_stream``: the request came on ModelStreamInfer (which may stream deltas); ModelInfer refuses
    ``streaming: true``.
    """
    model = exposed_model(gateway, request.model_name, request.model_version)
    encoder = ResponseEncoder(request, decoupled=in_stream)
    completion = completion_request(request)
    check_limits(completion, gateway.settings.limits, 0)  # the stop input's strings
    reject_unsupported(completion)
    if completion.stream and not in_stream:
        raise InvalidRequest("input `streaming`: streamed responses need the ModelStreamInfer RPC", param="streaming")
    require_live(model)  # before tokenizing
    body = msgspec.json.encode({"prompt": completion.prompt})
    prompt_ids, hashes = await gateway.tokenizer.tokenize(model.files_path, "completion", body, model.block_size)
    if not prompt_ids:
        raise InvalidRequest("input `text_input` must not be empty", param="text_input")
    engine_req = engine_request(gateway, completion, model, prompt_ids, completion.max_tokens, None)
    pinned = extensions(completion, headers, gateway.settings.apis.nvext).pinned
    generation = Generation(gateway, model, completion, engine_req, hashes, pinned=pinned)
    return Inference(generation, encoder, completion.stream)


async def folded(inference: Inference) -> pb.ModelInferResponse:
    """The whole completion as one response; the worker's error is raised."""
    collected = await collect(inference.generation)
    assert collected is not None  # no disconnect watch: a cancelled RPC cancels this task instead
    return inference.encoder.response(collected.text, collected.finish_reason)


async def streamed(inference: Inference) -> AsyncIterator[pb.ModelInferResponse]:
    """One response per text delta, the last one with the finish reason; the worker's error is raised."""
    encoder = inference.encoder
    async with aclosing(inference.generation.deltas()) as deltas:
        async for delta in deltas:
            if delta.text or delta.finish_reason:
                yield encoder.response(delta.text, delta.finish_reason)
