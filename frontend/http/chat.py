"""POST /v1/chat/completions: unary and streamed (SSE) chat completions."""

from __future__ import annotations

import time

import msgspec

from ..errors import EngineError, InvalidRequest, ServiceUnavailable
from ..gateway import Gateway
from ..protocol.openai import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
                               ChatCompletionRequest, ChatDelta, ChoiceLogprobs)
from ..generation import Generation, engine_request, pinned_instance, reject_unsupported
from .logprobs import chat_logprobs
from .responses import SSE_DONE, SSE_HEADERS, send_json, sse_error, sse_event
from .streaming import StreamWriter, decode_request

_decoder = msgspec.json.Decoder(ChatCompletionRequest)


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: ChatCompletionRequest = decode_request(_decoder, body)
    reject_unsupported(request)
    if not request.messages:
        raise InvalidRequest("messages must contain at least one message", param="messages")
    model = gateway.model(request.model)
    if "chat" not in model.card.model_types:
        raise InvalidRequest(f"model `{model.name}` does not serve chat completions", param="model")
    if not model.instance_ids:  # 503 before tokenizing
        raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
    prompt_ids, block_hashes = await gateway.tokenizer.tokenize(model.card.model_path, "chat", body,
                                                                model.block_size)
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    engine_req = engine_request(gateway, request, model, prompt_ids,
                                request.max_completion_tokens or request.max_tokens, logprobs)
    generation = Generation(gateway, model, request, engine_req, block_hashes,
                            pinned=pinned_instance(request, scope.headers), disconnected=proto.client_disconnect())
    response_id = "chatcmpl-" + engine_req.request_id
    if request.stream:
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        await _stream(generation, proto, response_id, model.name, include_usage)
    else:
        await _unary(generation, proto, response_id, model.name)


async def _unary(generation: Generation, proto, response_id: str, model: str) -> None:
    parts: list[str] = []
    logprob_entries = []
    finish_reason = None
    async for delta in generation.deltas():
        parts.append(delta.text)
        if delta.logprobs:
            logprob_entries.extend(delta.logprobs)
        if delta.error:
            raise EngineError(delta.error)
        finish_reason = delta.finish_reason
    if generation.client_gone:
        return
    tokenizer = generation.tokenizer
    logprobs = chat_logprobs(tokenizer, logprob_entries) if logprob_entries else None
    choice = ChatChoice(0, AssistantMessage("".join(parts)), finish_reason, logprobs)
    send_json(proto, 200, ChatCompletion(response_id, int(time.time()), model, [choice], generation.usage()))


async def _stream(generation: Generation, proto, response_id: str, model: str, include_usage: bool) -> None:
    created = int(time.time())
    writer = StreamWriter(proto.response_stream(200, SSE_HEADERS))
    tokenizer = generation.tokenizer

    def chunk(delta: ChatDelta, finish_reason: str | None = None, logprobs: ChoiceLogprobs | None = None) -> bytes:
        return sse_event(ChatCompletionChunk(response_id, created, model,
                                             [ChatChunkChoice(0, delta, finish_reason, logprobs)]))

    await writer.send(chunk(ChatDelta(role="assistant", content="")))
    async for delta in generation.deltas():
        if delta.error:
            await writer.send(sse_error(EngineError(delta.error)))
            break
        logprobs = chat_logprobs(tokenizer, delta.logprobs) if delta.logprobs else None
        out = b""
        if delta.text or logprobs:
            out = chunk(ChatDelta(content=delta.text), None, logprobs)
        if delta.finish_reason is not None:
            out += chunk(ChatDelta(), delta.finish_reason)
        if out and not await writer.send(out):
            return  # client went away; Generation aborted the worker
    tail = b""
    if include_usage:
        tail = sse_event(ChatCompletionChunk(response_id, created, model, [], usage=generation.usage()))
    await writer.send(tail + SSE_DONE)

