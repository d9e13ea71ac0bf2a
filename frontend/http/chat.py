"""POST /v1/chat/completions: unary and streamed (SSE) chat completions, with tool calls and reasoning.

Without output parsers (the model has none and the request no tools) a delta is plain text and the stream
loop does no per-segment work. With parsers, reasoning goes to ``reasoning_content`` and each tool call is
streamed as two deltas: id, type and name (arguments ``""``), then the arguments; ``content`` is null
rather than empty then, so that a client's accumulated stream equals the unary message.

With ``n > 1`` every choice is its own generation (``generation.Choices``); a streamed chunk carries one
choice with its ``index`` (a role chunk per choice first, then deltas as they come, a finish chunk per
choice), and usage counts the prompt once and the output of every choice. ``nvext.annotations`` add named
SSE events, ``nvext.extra_fields`` a response ``nvext`` (``frontend/pipeline/nvext.py``).
"""

from __future__ import annotations

import time
from typing import Callable

import msgspec

from ..gateway.state import Gateway
from ..parsers.base import REASONING, TOOL_CALL, Segment
from ..pipeline.chat_session import ChatOutcome, ChatSession, SessionChoice, collect_chat, open_session
from ..pipeline.nvext import MetricsEvents, prompt_annotations, response_nvext
from ..postprocess.pipeline import Delta
from ..protocol.openai import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
                               ChatCompletionRequest, ChatDelta, ChoiceLogprobs, FunctionCall, FunctionCallDelta,
                               ToolCall, ToolCallDelta)
from .logprobs import chat_logprobs
from .reply import SSE_DONE, SSE_HEADERS, TEXT_SLOT, TextEvent, send_json, sse_error, sse_event
from .streaming import StreamEnd, StreamWriter, decode_request, open_stream, stream_deltas

_decoder = msgspec.json.Decoder(ChatCompletionRequest)


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: ChatCompletionRequest = decode_request(_decoder, body)
    session = await open_session(gateway, request, body, scope.headers, proto.client_disconnect)
    async with session:
        response_id = "chatcmpl-" + session.request_id
        if request.stream:
            include_usage = request.stream_options is not None and request.stream_options.include_usage
            await _stream(session, open_stream(gateway, scope, proto, SSE_HEADERS), response_id, include_usage)
            return
        outcomes = await collect_chat(session)
        if outcomes is not None:
            send_json(proto, 200, _completion(session, outcomes, response_id))


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


def _choice_feeder(session: ChatSession, choice: SessionChoice, response_id: str,
                   created: int) -> tuple[bytes, Callable[[int, Delta], bytes], TextEvent | None]:
    """(the role chunk, feed, plain event) of one choice: ``feed(index, delta)`` turns the choice's delta into its
    SSE bytes, with the annotations asked for; the plain event is what ``feed`` makes of a delta of text alone (None
    when it adds more: metrics events). Closures, not methods: this is the streamed chat's per-delta hot path."""
    ext, model, index = session.ext, session.model.name, choice.index
    generation = choice.generation
    tokenizer = generation.tokenizer
    parsed_output = choice.chain is not None
    metrics = MetricsEvents(generation) if ext.metrics_events else None
    tool_index = 0

    def chunk(delta: ChatDelta, finish_reason: str | None = None, logprobs: ChoiceLogprobs | None = None) -> bytes:
        return sse_event(ChatCompletionChunk(response_id, created, model,
                                             [ChatChunkChoice(index, delta, finish_reason, logprobs)]))

    text_event = TextEvent(ChatCompletionChunk(response_id, created, model,
                                                    [ChatChunkChoice(index, ChatDelta(content=TEXT_SLOT))]))

    def feed(_index: int, delta: Delta) -> bytes:
        nonlocal tool_index
        if delta.segments is None and delta.finish_reason is None and not delta.logprobs and metrics is None:
            return text_event(delta.text) if delta.text else b""  # the common case: a text delta
        logprobs = chat_logprobs(tokenizer, delta.logprobs) if delta.logprobs else None
        if delta.segments is None:
            out = chunk(ChatDelta(content=delta.text), None, logprobs) if delta.text or logprobs else b""
        else:
            parsed = _segment_deltas(delta.segments, tool_index) or ([ChatDelta(content="")] if logprobs else [])
            out = b"".join(chunk(d, None, logprobs if i == 0 else None) for i, d in enumerate(parsed))
            tool_index += sum(1 for segment in delta.segments if segment.kind == TOOL_CALL)
        if delta.finish_reason is not None:
            final = ChatCompletionChunk(response_id, created, model, [ChatChunkChoice(
                index, ChatDelta(), choice.finish_reason(delta.finish_reason))], nvext=response_nvext(ext, generation))
            out += sse_event(final)
        if metrics is not None and out:
            out = metrics.event() + out
        return out

    return (chunk(ChatDelta(role="assistant", content=None if parsed_output else "")), feed,
            text_event if metrics is None else None)


async def _stream(session: ChatSession, writer: StreamWriter, response_id: str, include_usage: bool) -> None:
    created = int(time.time())
    feeders = [_choice_feeder(session, choice, response_id, created) for choice in session.choices]
    head = b"".join(opening for opening, _, _ in feeders)
    if session.ext.annotations:
        head = prompt_annotations(session.ext, session.request_id, [session.prompt_ids],
                                  session.generation.tokenizer) + head
    writer.write_later(head)  # with the first token's event, as vLLM sends it (the headers went already)
    encode = feeders[0][1] if len(feeders) == 1 else lambda index, delta: feeders[index][1](index, delta)
    ended = await stream_deltas(writer, [choice.generation for choice in session.choices], encode, sse_error,
                                plain_event=feeders[0][2])
    if ended is StreamEnd.CLIENT_GONE:
        return
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
