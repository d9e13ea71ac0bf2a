"""POST /v1/completions: unary and streamed (SSE) text completions."""

from __future__ import annotations

import time

import msgspec

from ..errors import EngineError, InvalidRequest, ServiceUnavailable
from ..kv import block_hashes
from ..gateway import Gateway
from ..protocol.openai import Completion, CompletionChoice, CompletionRequest
from ..generation import Generation, engine_request, pinned_instance, reject_unsupported
from .logprobs import completion_logprobs
from .responses import SSE_DONE, SSE_HEADERS, send_json, sse_error, sse_event
from .streaming import StreamWriter, decode_request

_decoder = msgspec.json.Decoder(CompletionRequest)


def _single_prompt(prompt: str | list) -> str | list[int]:
    """The one prompt of the request: a string or token ids (batches of prompts are not supported yet)."""
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    kinds = {type(item) for item in prompt}
    if len(kinds) != 1:
        raise InvalidRequest("prompt must be a string, a list of strings, a list of token ids or a list of "
                             "token-id lists", param="prompt")
    if kinds == {int}:
        return prompt
    if len(prompt) != 1:
        raise InvalidRequest("a batch of several prompts is not supported by this server yet", param="prompt")
    return prompt[0]


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: CompletionRequest = decode_request(_decoder, body)
    reject_unsupported(request)
    prompt = _single_prompt(request.prompt)
    model = gateway.model(request.model)
    if "completions" not in model.card.model_types:
        raise InvalidRequest(f"model `{model.name}` does not serve completions", param="model")
    if not model.instance_ids:  # 503 before tokenizing
        raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
    if isinstance(prompt, str):
        single = body if isinstance(request.prompt, str) else msgspec.json.encode({"prompt": prompt})
        prompt_ids, hashes = await gateway.tokenizer.tokenize(model.card.model_path, "completion", single,
                                                              model.block_size)
    else:
        prompt_ids = list(prompt)
        vocab_size = model.tokenizer.get_vocab_size()
        if max(prompt_ids) >= vocab_size:
            raise InvalidRequest(f"prompt token id {max(prompt_ids)} is outside the vocabulary (size {vocab_size})",
                                 param="prompt")
        hashes = block_hashes(prompt_ids, model.block_size).tobytes()
    if not prompt_ids:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    engine_req = engine_request(gateway, request, model, prompt_ids, request.max_tokens, request.logprobs)
    generation = Generation(gateway, model, request, engine_req, hashes,
                            pinned=pinned_instance(request, scope.headers), disconnected=proto.client_disconnect())
    echo = model.tokenizer.decode(prompt_ids, skip_special_tokens=False) if request.echo else ""
    response_id = "cmpl-" + engine_req.request_id
    if request.stream:
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        await _stream(generation, proto, response_id, model.name, echo, include_usage)
    else:
        await _unary(generation, proto, response_id, model.name, echo)


async def _unary(generation: Generation, proto, response_id: str, model: str, echo: str) -> None:
    parts: list[str] = [echo]
    entries = []
    finish_reason = None
    async for delta in generation.deltas():
        if delta.error:
            raise EngineError(delta.error)
        parts.append(delta.text)
        if delta.logprobs:
            entries.extend(delta.logprobs)
        finish_reason = delta.finish_reason
    if generation.client_gone:
        return
    tokenizer = generation.tokenizer
    logprobs = completion_logprobs(tokenizer, entries, len(echo)) if entries else None
    choice = CompletionChoice(0, "".join(parts), finish_reason, logprobs)
    send_json(proto, 200, Completion(response_id, int(time.time()), model, [choice], generation.usage()))


async def _stream(generation: Generation, proto, response_id: str, model: str, echo: str,
                  include_usage: bool) -> None:
    created = int(time.time())
    writer = StreamWriter(proto.response_stream(200, SSE_HEADERS))
    tokenizer = generation.tokenizer
    offset = len(echo)
    if echo:
        await writer.send(sse_event(Completion(response_id, created, model, [CompletionChoice(0, echo, None)], None)))
    async for delta in generation.deltas():
        if delta.error:
            await writer.send(sse_error(EngineError(delta.error)))
            break
        if not (delta.text or delta.logprobs or delta.finish_reason):
            continue
        logprobs = completion_logprobs(tokenizer, delta.logprobs, offset) if delta.logprobs else None
        offset += len(delta.text)
        choice = CompletionChoice(0, delta.text, delta.finish_reason, logprobs)
        if not await writer.send(sse_event(Completion(response_id, created, model, [choice], None))):
            return
    tail = b""
    if include_usage:
        tail = sse_event(Completion(response_id, created, model, [], generation.usage()))
    await writer.send(tail + SSE_DONE)
