"""The Anthropic Messages API: ``POST /v1/messages`` (unary and SSE) and ``POST /v1/messages/count_tokens``.

Served on top of chat (``anthropic_input.py`` translates the request); the parsed output becomes content
blocks in order: a run of reasoning a ``thinking`` block, a run of text a ``text`` block, each tool call a
``tool_use`` block (ids minted here, ``toolu_...``). Streams follow Anthropic's event sequence::

    message_start, ping, (content_block_start, content_block_delta..., content_block_stop)...,
    message_delta (stop_reason, stop_sequence, usage), message_stop

Errors have Anthropic's shape and statuses (:func:`send_error`; the app uses it for these paths, so a 413 or
an overload is shaped the same way). With ``--api-key`` the app checks ``x-api-key`` (or a Bearer token) before
the body is read (``http/auth.py``); ``anthropic-version`` is accepted and not checked.
"""

from __future__ import annotations

import json
import uuid

import msgspec

from ..gateway.state import Gateway
from ..parsers.base import CONTENT, REASONING, TOOL_CALL, Segment
from ..pipeline.chat_session import ChatSession, collect_chat, open_session, segments_of, tool_choice_of
from ..pipeline.guided import SCHEMA_FIELD
from ..pipeline.prepare import served_model
from ..postprocess.pipeline import Delta
from ..protocol import anthropic as an
from ..protocol.errors import ContextLengthExceeded, NotFoundRoute, RequestError
from ..protocol.openai import Usage
from .anthropic_input import to_chat_request
from .reply import JSON_HEADERS, SSE_HEADERS, json_encode, send_json
from .streaming import StreamWriter, decode_request, open_stream, stream_deltas

_decoder = msgspec.json.Decoder(an.MessagesRequest)
_count_decoder = msgspec.json.Decoder(an.CountTokensRequest)

# chat field -> Anthropic's, in 400s
_FIELD_NAMES = {"stop": "stop_sequences", "response_format": "output_config.format",
                SCHEMA_FIELD: "output_config.format.schema"}
# our status -> (Anthropic's status, error type)
_ERRORS = {400: (400, "invalid_request_error"), 401: (401, "authentication_error"), 404: (404, "not_found_error"),
           405: (405, "invalid_request_error"), 408: (408, "timeout_error"), 413: (413, "request_too_large"),
           500: (500, "api_error"), 502: (500, "api_error"), 503: (529, "overloaded_error"),
           529: (529, "overloaded_error")}


def send_error(proto, error: RequestError) -> None:
    """An error as ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's status."""
    status, kind = _ERRORS.get(error.status, (error.status, "api_error"))
    headers = JSON_HEADERS + [("retry-after", "1")] if status == 529 else JSON_HEADERS
    proto.response_bytes(status, headers, json_encode(an.ErrorBody(an.ErrorInfo(kind, _message(error)))))


def _message(error: RequestError) -> str:
    """The error's message; a context-window overflow in Anthropic's words, which its clients recognise."""
    if not isinstance(error, ContextLengthExceeded) or not error.context_length:
        return error.message
    prompt, limit, requested = error.prompt_tokens, error.context_length, error.requested
    if prompt > limit or requested is None:
        return f"prompt is too long: {prompt} tokens > {limit} maximum"
    return (f"input length and `max_tokens` exceed context limit: {prompt} + {requested} > {limit}, "
            "decrease input length or `max_tokens` and try again")


async def messages(gateway: Gateway, scope, proto, body: bytes) -> None:
    """POST /v1/messages."""
    _check_enabled(gateway)
    request: an.MessagesRequest = decode_request(_decoder, body)
    chat = to_chat_request(request)
    session = await open_session(gateway, chat, msgspec.json.encode(chat), scope.headers, proto.client_disconnect,
                                 names=_FIELD_NAMES)
    async with session:
        message_id = "msg_" + uuid.uuid4().hex
        if request.stream:
            await _stream(session, open_stream(gateway, scope, proto, SSE_HEADERS), message_id)
            return
        outcomes = await collect_chat(session)
        if outcomes is not None:
            outcome = outcomes[0]
            blocks = [_block(segment) for segment in outcome.segments]
            stop_reason, stop_sequence = _stop(session, outcome.finish_reason)
            send_json(proto, 200, an.Message(message_id, session.model.name, blocks, stop_reason, stop_sequence,
                                             _usage(outcome.usage)))


async def count_tokens(gateway: Gateway, scope, proto, body: bytes) -> None:
    """POST /v1/messages/count_tokens: the prompt's length in tokens as the model's template renders it."""
    _check_enabled(gateway)
    chat = to_chat_request(decode_request(_count_decoder, body))
    tool_choice_of(chat)
    model = served_model(gateway, chat.model, "chat")
    prompt_ids, _ = await gateway.tokenizer.tokenize(model.files_path, "chat", msgspec.json.encode(chat), 0)
    send_json(proto, 200, an.TokenCount(len(prompt_ids)))


def _check_enabled(gateway: Gateway) -> None:
    if not gateway.settings.apis.anthropic_api:
        raise NotFoundRoute("the Anthropic Messages API is disabled on this server (--no-enable-anthropic-api)")


def _block(segment: Segment) -> an.ContentBlock:
    if segment.kind == TOOL_CALL:
        assert segment.call is not None
        return an.ToolUseContent(_tool_use_id(), segment.call.name, json.loads(segment.call.arguments))
    if segment.kind == REASONING:
        return an.ThinkingContent(segment.text)
    return an.TextContent(segment.text)


def _tool_use_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def _stop(session: ChatSession, finish_reason: str) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for the chat finish reason."""
    stop_sequence = session.stop_sequence
    if stop_sequence is not None:
        return "stop_sequence", stop_sequence
    return {"tool_calls": "tool_use", "length": "max_tokens"}.get(finish_reason, "end_turn"), None


def _usage(usage: Usage) -> an.MessageUsage:
    """Anthropic's usage: ``input_tokens`` without the prompt tokens read from the cache."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return an.MessageUsage(usage.prompt_tokens - cached, usage.completion_tokens, 0, cached)


async def _stream(session: ChatSession, writer: StreamWriter, message_id: str) -> None:
    """The event stream. ``message_start`` goes out with the first output, which tells how much of the prompt the
    worker found cached: its usage and the final ``message_delta``'s carry the same input split."""
    blocks = _BlockStream()
    segments: list[Segment] = []
    start: an.MessageUsage | None = None

    def encode(_index: int, delta: Delta) -> bytes:
        nonlocal start
        events: list[an.StreamEvent] = []
        if start is None:
            start = _usage(session.usage())
            events += [an.MessageStart(an.Message(message_id, session.model.name, [], None, None, start)), an.Ping()]
        parsed = segments_of(delta.segments, delta.text)
        segments.extend(parsed)
        events += blocks.add(parsed)
        if delta.finish_reason is not None:
            finish_reason = session.finish_reason(delta.finish_reason)
            usage = msgspec.structs.replace(start, output_tokens=session.usage().completion_tokens)
            events += blocks.close()
            events += [an.MessageDelta(an.StopDelta(*_stop(session, finish_reason)), usage), an.MessageStop()]
        return _sse(events) if events else b""

    def encode_error(error: RequestError) -> bytes:
        return _sse([an.ErrorBody(an.ErrorInfo(_ERRORS.get(error.status, (0, "api_error"))[1], _message(error)))])

    await stream_deltas(writer, [session.generation], encode, encode_error)


class _BlockStream:
    """Content-block events for parsed segments; a block stays open while segments of its kind follow."""

    def __init__(self) -> None:
        self.index = -1
        self.kind = -1  # kind of the open text/thinking block, -1: none

    def add(self, segments: list[Segment]) -> list[an.StreamEvent]:
        events: list[an.StreamEvent] = []
        for segment in segments:
            if segment.kind == TOOL_CALL:
                assert segment.call is not None
                events += self.close()
                self.index += 1
                use = an.ToolUseContent(_tool_use_id(), segment.call.name, {})
                events += [an.ContentBlockStart(self.index, use),
                           an.ContentBlockDelta(self.index, an.InputJsonDelta(segment.call.arguments)),
                           an.ContentBlockStop(self.index)]
                continue
            if segment.kind != self.kind:
                events += self.close()
                self.index, self.kind = self.index + 1, segment.kind
                opening = an.TextContent("") if segment.kind == CONTENT else an.ThinkingContent("")
                events.append(an.ContentBlockStart(self.index, opening))
            text_delta = an.TextDelta(segment.text) if segment.kind == CONTENT else an.ThinkingDelta(segment.text)
            events.append(an.ContentBlockDelta(self.index, text_delta))
        return events

    def close(self) -> list[an.StreamEvent]:
        if self.kind < 0:
            return []
        self.kind = -1
        return [an.ContentBlockStop(self.index)]


def _sse(events: list[an.StreamEvent]) -> bytes:
    return b"".join(b"event: " + type(event).__struct_config__.tag.encode() + b"\ndata: " + json_encode(event)
                    + b"\n\n" for event in events)
