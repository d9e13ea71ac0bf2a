"""POST /v1/chat/completions: unary and streamed (SSE) chat completions, with tool calls and reasoning.

Without output parsers (the model has none and the request no tools) a delta is plain text and the stream
loop does no per-segment work. With parsers, reasoning goes to ``reasoning_content`` and each tool call is
streamed as two deltas: id, type and name (arguments ``""``), then the arguments; ``content`` is null
rather than empty then, so that a client's accumulated stream equals the unary message.
"""

from __future__ import annotations

import time

import msgspec

from ..errors import EngineError
from ..gateway import Gateway
from ..parsers.base import REASONING, TOOL_CALL, Segment
from ..protocol.openai import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
                               ChatCompletionRequest, ChatDelta, ChoiceLogprobs, FunctionCall, FunctionCallDelta,
                               ToolCall, ToolCallDelta)
from .chat_session import ChatOutcome, ChatSession, collect, open_session
from .logprobs import chat_logprobs
from .responses import SSE_DONE, SSE_HEADERS, send_json, sse_error, sse_event
from .streaming import StreamWriter, decode_request

_decoder = msgspec.json.Decoder(ChatCompletionRequest)


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: ChatCompletionRequest = decode_request(_decoder, body)
    session = await open_session(gateway, request, body, scope.headers, proto.client_disconnect())
    response_id = "chatcmpl-" + session.request_id
    if request.stream:
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        await _stream(session, proto, response_id, include_usage)
    else:
        outcome = await collect(session)
        if outcome is not None:
            send_json(proto, 200, _completion(session, outcome, response_id))


def _completion(session: ChatSession, outcome: ChatOutcome, response_id: str) -> ChatCompletion:
    calls = [ToolCall(s.call.id, FunctionCall(s.call.name, s.call.arguments)) for s in outcome.tool_calls if s.call]
    text = outcome.text if session.chain is None else outcome.text or None  # parsed output: null when empty
    message = AssistantMessage(text, reasoning_content=outcome.joined(REASONING) or None, tool_calls=calls or None)
    logprobs = chat_logprobs(session.generation.tokenizer, outcome.logprobs) if outcome.logprobs else None
    choice = ChatChoice(0, message, outcome.finish_reason, logprobs)
    return ChatCompletion(response_id, int(time.time()), session.model.name, [choice], outcome.usage)


async def _stream(session: ChatSession, proto, response_id: str, include_usage: bool) -> None:
    created = int(time.time())
    model = session.model.name
    generation = session.generation
    writer = StreamWriter(proto.response_stream(200, SSE_HEADERS))
    tokenizer = generation.tokenizer
    tool_index = 0

    def chunk(delta: ChatDelta, finish_reason: str | None = None, logprobs: ChoiceLogprobs | None = None) -> bytes:
        return sse_event(ChatCompletionChunk(response_id, created, model,
                                             [ChatChunkChoice(0, delta, finish_reason, logprobs)]))

    await writer.send(chunk(ChatDelta(role="assistant", content="" if session.chain is None else None)))
    async for delta in generation.deltas():
        if delta.error:
            await writer.send(sse_error(EngineError(delta.error)))
            break
        logprobs = chat_logprobs(tokenizer, delta.logprobs) if delta.logprobs else None
        if delta.segments is None:
            out = chunk(ChatDelta(content=delta.text), None, logprobs) if delta.text or logprobs else b""
        else:
            parsed = _segment_deltas(delta.segments, tool_index) or ([ChatDelta(content="")] if logprobs else [])
            out = b"".join(chunk(d, None, logprobs if i == 0 else None) for i, d in enumerate(parsed))
            tool_index += sum(1 for segment in delta.segments if segment.kind == TOOL_CALL)
        if delta.finish_reason is not None:
            out += chunk(ChatDelta(), session.finish_reason(delta.finish_reason))
        if out and not await writer.send(out):
            return  # client went away; Generation aborted the worker
    tail = b""
    if include_usage:
        tail = sse_event(ChatCompletionChunk(response_id, created, model, [], usage=generation.usage()))
    await writer.send(tail + SSE_DONE)


def _segment_deltas(segments: list[Segment], tool_index: int) -> list[ChatDelta]:
    """The chat deltas of parsed segments, in order; tool calls numbered from ``tool_index``."""
    deltas = []
    for segment in segments:
        if segment.kind == TOOL_CALL:
            call = segment.call
            assert call is not None
            opening = ToolCallDelta(tool_index, FunctionCallDelta(call.name, ""), call.id, "function")
            arguments = ToolCallDelta(tool_index, FunctionCallDelta(arguments=call.arguments))
            deltas += [ChatDelta(tool_calls=[opening]), ChatDelta(tool_calls=[arguments])]
            tool_index += 1
        elif segment.kind == REASONING:
            deltas.append(ChatDelta(reasoning_content=segment.text))
        else:
            deltas.append(ChatDelta(content=segment.text))
    return deltas
