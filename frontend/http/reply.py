"""Response helpers: JSON bodies, OpenAI-shaped errors and server-sent-event framing."""

from __future__ import annotations

import logging

import msgspec

from ..protocol.errors import InternalError, RequestError, ServiceUnavailable
from ..protocol.openai import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

JSON_HEADERS = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
SSE_DONE = b"data: [DONE]\n\n"

json_encode = msgspec.json.encode


def send_json(proto, status: int, body: msgspec.Struct | dict, headers: list[tuple[str, str]] | None = None) -> None:
    proto.response_bytes(status, headers or JSON_HEADERS, json_encode(body))


def error_body(error: RequestError) -> ErrorResponse:
    return ErrorResponse(ErrorDetail(error.message, error.error_type, error.param, error.code))


def send_error(proto, error: RequestError) -> None:
    headers = JSON_HEADERS
    if isinstance(error, ServiceUnavailable):  # 503, and the overload status of every worker busy (529)
        headers = JSON_HEADERS + [("retry-after", "1")]
    elif error.status == 401:  # no or a wrong API key (RFC 6750)
        headers = JSON_HEADERS + [("www-authenticate", "Bearer")]
    proto.response_bytes(error.status, headers, json_encode(error_body(error)))


def internal_error(exc: BaseException) -> InternalError:
    """Log a bug with its traceback; the client gets a 500 without internals. A client that closed its connection
    before it was answered (mid-body: Granian raises ``RSGIProtocolClosed`` from the body read) is no bug: it is
    logged as a disconnect, at info and without a traceback (the 500 then goes nowhere)."""
    if client_closed(exc):
        log.info("client disconnected before the response", extra={"error": type(exc).__name__})
        return InternalError("client disconnected")
    log.error("unhandled error", exc_info=exc)
    return InternalError("internal server error")


def client_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is Granian's "the client closed the connection" (``RSGIProtocolClosed``)."""
    from granian.rsgi import ProtocolClosed  # already loaded in Granian's workers; not needed before an error

    return isinstance(exc, ProtocolClosed)


def sse_event(body: msgspec.Struct) -> bytes:
    return b"data: " + json_encode(body) + b"\n\n"


TEXT_SLOT = "\x00text slot\x00"
"""Where :class:`TextEvent` puts the text in its template event (no generated text contains it: it is split
on its JSON encoding, which has escapes)."""


class TextEvent:
    """``event(text)``: the bytes :func:`sse_event` makes of a template event with ``TEXT_SLOT`` replaced by
    ``text``, at the cost of one string encode (the streamed text delta's hot path: no Structs per event). The
    event is ``prefix``, the text as a JSON string, ``suffix`` (the native plain-token path writes it so)."""

    __slots__ = ("prefix", "suffix")

    def __init__(self, template: msgspec.Struct) -> None:
        self.prefix, slot, self.suffix = sse_event(template).partition(json_encode(TEXT_SLOT))
        assert slot, "the template event holds no TEXT_SLOT"

    def __call__(self, text: str) -> bytes:
        return self.prefix + json_encode(text) + self.suffix


def sse_error(error: RequestError) -> bytes:
    return sse_event(error_body(error))


def validation_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> tuple[str, str | None]:
    """msgspec's message and the field it names (``$.messages[0].role`` -> ``messages[0].role``)."""
    message = str(exc)
    param = None
    marker = " - at `$."
    if marker in message:
        param = message.rsplit(marker, 1)[1].rstrip("`")
    return message, param
