"""POST /v1/embeddings: OpenAI's embeddings API, served by workers whose card has the ``embedding`` type.

Strings are tokenized in the tokenizer pool (with the model's special tokens, as a completion prompt is);
token-id inputs go as they are. A batch is cut into contiguous chunks of about equal token counts, at most
one per live worker and at least ``MIN_CHUNK_INPUTS`` inputs each, and the chunks run concurrently, each
routed like any request (round robin, or the least loaded worker in kv mode). Vectors come back as
little-endian float32; ``dimensions`` keeps the first N and normalizes them again to unit length
(Matryoshka-style, as OpenAI's text-embedding-3 models do); ``encoding_format: base64`` is the base64 of the
float32 bytes.
"""

from __future__ import annotations

import asyncio
import base64
import math
import sys
from array import array

import msgspec

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..pipeline.prepare import pinned_instance, served_model
from ..pipeline.unary import UnaryCall
from ..protocol.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from ..protocol.engine import EmbedRequest, EmbedResult
from ..protocol.errors import ContextLengthExceeded, EngineError, InvalidRequest
from .reply import send_json
from .streaming import decode_request

_decoder = msgspec.json.Decoder(EmbeddingRequest)
MAX_INPUTS = 2048
MIN_CHUNK_INPUTS = 8
_INPUT_KINDS = ("input must be a non-empty string, a list of strings, a list of token ids or a list of "
                "token-id lists")


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: EmbeddingRequest = decode_request(_decoder, body)
    model = served_model(gateway, request.model, "embedding")
    inputs = await _token_inputs(gateway, model, request.input)
    pinned = pinned_instance(gateway, scope.headers, _backend_instance_id(request.nvext))
    chunks = split_batch([len(ids) for ids in inputs], len(model.instance_ids))
    results = await _run_chunks(gateway, model, [inputs[start:end] for start, end in chunks], pinned)
    data = []
    for result in results:
        for raw in result.vectors:
            vector = _vector(raw, request.dimensions)
            value = base64.b64encode(_le_bytes(vector)).decode() if request.encoding_format == "base64" \
                else vector.tolist()
            data.append(Embedding(len(data), value))
    tokens = sum(len(ids) for ids in inputs)
    send_json(proto, 200, EmbeddingResponse(data, model.name, EmbeddingUsage(tokens, tokens)))


def split_batch(lengths: list[int], workers: int) -> list[tuple[int, int]]:
    """Contiguous (start, end) chunks of about equal token counts: at most one per worker, at least
    ``MIN_CHUNK_INPUTS`` inputs each (one chunk for a small batch)."""
    count = max(1, min(workers, math.ceil(len(lengths) / MIN_CHUNK_INPUTS)))
    target = sum(lengths) / count
    chunks: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for index, length in enumerate(lengths):
        tokens += length
        cuts_left = count - len(chunks) - 1
        if cuts_left and tokens >= target * (len(chunks) + 1) and len(lengths) - index - 1 >= cuts_left:
            chunks.append((start, index + 1))
            start = index + 1
    chunks.append((start, len(lengths)))
    return chunks


async def _token_inputs(gateway: Gateway, model: ServedModel, value: str | list) -> list[list[int]]:
    """The request's inputs as token-id lists, checked against the vocabulary and the context window."""
    if isinstance(value, str) or (value and all(isinstance(item, int) for item in value)):
        value = [value]
    if not value or len({type(item) for item in value}) != 1 or isinstance(value[0], int):
        raise InvalidRequest(_INPUT_KINDS, param="input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"input has {len(value)} items; at most {MAX_INPUTS} are allowed", param="input")
    if isinstance(value[0], str):
        if not all(value):
            raise InvalidRequest(f"input[{value.index('')}] is an empty string", param="input")
        inputs = await asyncio.gather(*(_tokenize(gateway, model, text) for text in value))
    else:
        inputs = value
    assert model.tokenizer is not None  # an embedding model has one (ModelCard.tokenized)
    vocab_size = model.tokenizer.get_vocab_size()
    for index, ids in enumerate(inputs):
        if not ids:
            raise InvalidRequest(f"input[{index}] is empty", param="input")
        if max(ids) >= vocab_size:
            raise InvalidRequest(f"input[{index}] has token id {max(ids)}, outside the vocabulary (size "
                                 f"{vocab_size})", param="input")
        if len(ids) > model.card.context_length:
            raise ContextLengthExceeded(f"input[{index}] has {len(ids)} tokens; this model's maximum context "
                                        f"length is {model.card.context_length} tokens", "input")
    return inputs


async def _tokenize(gateway: Gateway, model: ServedModel, text: str) -> list[int]:
    body = msgspec.json.encode({"prompt": text})
    token_ids, _ = await gateway.tokenizer.tokenize(model.files_path, "completion", body, 0)
    return token_ids


async def _run_chunks(gateway: Gateway, model: ServedModel, chunks: list[list[list[int]]],
                      pinned: str | None) -> list[EmbedResult]:
    """Every chunk on a worker at once; the first failure cancels (and aborts) the others."""
    tasks = [asyncio.ensure_future(_embed(gateway, model, chunk, pinned)) for chunk in chunks]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def _embed(gateway: Gateway, model: ServedModel, inputs: list[list[int]], pinned: str | None) -> EmbedResult:
    request = EmbedRequest(gateway.new_request_id(), inputs, model.name)
    async with UnaryCall(gateway, model, request, input_tokens=sum(len(ids) for ids in inputs),
                         pinned=pinned) as call:
        result = await call.result()
    assert isinstance(result, EmbedResult)  # no disconnect watch here, so there is always a result
    if len(result.vectors) != len(inputs):
        raise EngineError(f"the worker returned {len(result.vectors)} vectors for {len(inputs)} inputs")
    return result


def _backend_instance_id(nvext: dict | None) -> object:
    """``nvext.backend_instance_id`` of an embeddings request (its nvext is a free-form object)."""
    return nvext.get("backend_instance_id") if isinstance(nvext, dict) else None


def _vector(raw: bytes, dimensions: int | None) -> array:
    """A worker's float32 vector, cut to ``dimensions`` and normalized again when asked."""
    vector = array("f")
    vector.frombytes(raw)
    if sys.byteorder == "big":
        vector.byteswap()
    if dimensions is None or dimensions == len(vector):
        return vector
    if dimensions > len(vector):
        raise InvalidRequest(f"dimensions must be at most {len(vector)} for this model", param="dimensions")
    vector = vector[:dimensions]
    norm = math.sqrt(math.fsum(value * value for value in vector))
    return array("f", (value / norm for value in vector)) if norm else vector


def _le_bytes(vector: array) -> bytes:
    """float32 little-endian bytes, the base64 encoding OpenAI's SDKs decode."""
    if sys.byteorder == "big":
        vector = array("f", vector)
        vector.byteswap()
    return vector.tobytes()
