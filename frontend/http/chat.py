"""POST /v1/chat/completions: unary and streamed (SSE) chat completions, with tool calls and reasoning.

Without output parsers (the model has none and the request no tools) a delta is plain text and the stream
loop does no per-segment work. With parsers, reasoning goes to ``reasoning_content`` and each tool call is
streamed as two deltas: id, type and name (arguments ``""``), then the arguments; ``content`` is null
rather than empty then, so that a client's accumulated stream equals the unary message.

With ``n > 1`` every choice is its own generation (``generation.Choices``); a streamed chunk carries one
choice with its ``index`` (a role chunk per choice first, then deltas as they come, a finish chunk per
choice), and usage counts the prompt once and the output of every choice. ``nvext.annotations`` add named
SSE events, ``nvext.extra_fields`` a response ``nvext`` (``frontend/nvext.py``).
"""

from __future__ import annotations

import time
from contextlib import aclosing

import msgspec

from ..errors import EngineError
from ..gateway import Gateway
from ..generation import merged
from ..nvext import MetricsEvents, prompt_annotations, response_nvext
from ..parsers.base import REASONING, TOOL_CALL, Segment
from ..postprocess.pipeline import Delta
from ..protocol.openai import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
                               ChatCompletionRequest, ChatDelta, ChoiceLogprobs, FunctionCall, FunctionCallDelta,
                               ToolCall, ToolCallDelta)
from .chat_session import ChatOutcome, ChatSession, SessionChoice, collect_all, open_session
from .logprobs import chat_logprobs
from .responses import SSE_DONE, SSE_HEADERS, send_json, sse_error, sse_event
from .streaming import StreamWriter, decode_request

_decoder = msgspec.json.Decoder(ChatCompletionRequest)


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: ChatCompletionRequest = decode_request(_decoder, body)
    session = await open_session(gateway, request, body, scope.headers, proto.client_disconnect())
    try:
        response_id = "chatcmpl-" + session.request_id
        if request.stream:
            include_usage = request.stream_options is not None and request.stream_options.include_usage
            await _stream(session, proto, response_id, include_usage)
        else:
            outcomes = await collect_all(session)
            if outcomes is not None:
                send_json(proto, 200, _completion(session, outcomes, response_id))
    finally:
        session.close()


def _completion(session: ChatSession, outcomes: list[ChatOutcome], response_id: str) -> ChatCompletion:
    choices = []
    for choice, outcome in zip(session.choices, outcomes):
        calls = [ToolCall(s.call.id, FunctionCall(s.call.name, s.call.arguments))
                 for s in outcome.tool_calls if s.call]
        text = outcome.text if choice.chain is None else outcome.text or None  # parsed output: null when empty
        message = AssistantMessage(text, reasoning_content=outcome.joined(REASONING) or None,
                                   tool_calls=calls or None)
        logprobs = chat_logprobs(choice.generation.tokenizer, outcome.logprobs) if outcome.logprobs else None
        choices.append(ChatChoice(choice.index, message, outcome.finish_reason, logprobs))
    return ChatCompletion(response_id, int(time.time()), session.model.name, choices, outcomes[0].usage,
                          nvext=response_nvext(session.ext, session.generation))


class _ChoiceChunks:
    """The SSE chunks of one choice: deltas in, ``data:`` events out (with the annotations asked for)."""

    __slots__ = ("choice", "ext", "response_id", "created", "model", "tokenizer", "tool_index", "metrics")

    def __init__(self, session: ChatSession, choice: SessionChoice, response_id: str, created: int) -> None:
        self.choice = choice
        self.ext = session.ext
        self.response_id = response_id
        self.created = created
        self.model = session.model.name
        self.tokenizer = choice.generation.tokenizer
        self.tool_index = 0
        self.metrics = MetricsEvents(choice.generation) if session.ext.metrics_events else None

    def chunk(self, delta: ChatDelta, finish_reason: str | None = None, logprobs: ChoiceLogprobs | None = None,
              nvext=msgspec.UNSET) -> bytes:
        return sse_event(ChatCompletionChunk(self.response_id, self.created, self.model,
                                             [ChatChunkChoice(self.choice.index, delta, finish_reason, logprobs)],
                                             nvext=nvext))

    def opening(self) -> bytes:
        return self.chunk(ChatDelta(role="assistant", content="" if self.choice.chain is None else None))

    def feed(self, delta: Delta) -> bytes:
        logprobs = chat_logprobs(self.tokenizer, delta.logprobs) if delta.logprobs else None
        if delta.segments is None:
            out = self.chunk(ChatDelta(content=delta.text), None, logprobs) if delta.text or logprobs else b""
        else:
            parsed = _segment_deltas(delta.segments, self.tool_index) or ([ChatDelta(content="")] if logprobs else [])
            out = b"".join(self.chunk(d, None, logprobs if i == 0 else None) for i, d in enumerate(parsed))
            self.tool_index += sum(1 for segment in delta.segments if segment.kind == TOOL_CALL)
        if delta.finish_reason is not None:
            out += self.chunk(ChatDelta(), self.choice.finish_reason(delta.finish_reason),
                              nvext=response_nvext(self.ext, self.choice.generation))
        if out and self.metrics is not None:
            out = self.metrics.event() + out
        return out


async def _stream(session: ChatSession, proto, response_id: str, include_usage: bool) -> None:
    created = int(time.time())
    writer = StreamWriter(proto.response_stream(200, SSE_HEADERS))
    streams = [_ChoiceChunks(session, choice, response_id, created) for choice in session.choices]
    head = b"".join(stream.opening() for stream in streams)
    if session.ext.annotations:
        head = prompt_annotations(session.ext, session.request_id, [session.prompt_ids],
                                  session.generation.tokenizer) + head
    await writer.send(head)
    if len(streams) == 1:
        stream = streams[0]
        async for delta in session.generation.deltas():
            if delta.error:
                await writer.send(sse_error(EngineError(delta.error)))
                break
            out = stream.feed(delta)
            if out and not await writer.send(out):
                return  # client went away; Generation aborted the worker
    else:
        async with aclosing(merged([choice.generation for choice in session.choices])) as deltas:
            async for index, delta in deltas:
                if delta.error:
                    await writer.send(sse_error(EngineError(delta.error)))
                    break
                out = streams[index].feed(delta)
                if out and not await writer.send(out):
                    return  # client went away: closing `deltas` aborts the other choices
    tail = b""
    if include_usage:
        tail = sse_event(ChatCompletionChunk(response_id, created, session.model.name, [], usage=session.usage()))
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
