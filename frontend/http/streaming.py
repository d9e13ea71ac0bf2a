"""Request decoding, the stream writer, and the one loop that streams generations to a client.

:func:`stream_deltas` is what every streamed front door (chat, completions, Responses, Messages) runs: each
choice's deltas, encoded by the door's ``encode``, written as they come; a worker's failure encoded by the
door's ``encode_error``. The door only says how a delta and an error look on its wire.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from contextlib import aclosing
from typing import Callable

import msgspec

from ..gateway.state import Gateway
from ..observability.metrics import CURRENT_REQUEST
from ..pipeline.generation import Generation, choice_batches
from ..postprocess.pipeline import Delta
from ..protocol.errors import InvalidRequest, RequestError, SlowReader
from ..protocol.limits import depth_problem, json_depth_exceeds
from ..transport.end_of_turn import TurnWriter, end_of_turn
from .client_backlog import ClientBacklog
from .reply import TextEvent, validation_error


def decode_request(decoder: msgspec.json.Decoder, body: bytes):
    """Decode and validate a JSON body; any problem is a 400 naming the field. A body nested more than
    ``MAX_JSON_DEPTH`` levels deep is refused before decoding (``protocol/limits.py``). The request being served is
    then known to stream or not (the ``request_type`` of its metrics)."""
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    if json_depth_exceeds(body):
        raise InvalidRequest(depth_problem())
    try:
        request = decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, param = validation_error(exc)
        raise InvalidRequest(message, param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from None
    except RecursionError:  # not reached after the depth check; kept so that no nesting is ever a 500
        raise InvalidRequest(depth_problem()) from None
    record = CURRENT_REQUEST.get()
    if record is not None:
        record.stream = getattr(request, "stream", None) is True
    return request


class StreamWriter(TurnWriter):
    """Writes a streamed response's bytes to a Granian stream transport; remembers when the client has gone
    (``closed``). Events written "soon" in one loop turn go out in one write at its end (``TurnWriter``, native, so
    that the plain-token path queues without a Python call). With a :class:`ClientBacklog`, a write waits while
    the client leaves too much unread (see ``client_backlog``)."""

    __slots__ = ("backlog", "too_slow")

    def __init__(self, transport, backlog: ClientBacklog | None = None, loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        """``loop``: the running loop, when known (else asked for: a ``getpid()`` system call)."""
        super().__init__(transport, end_of_turn(loop))
        self.backlog = backlog
        self.too_slow: SlowReader | None = None  # set when the client read too slowly (send returned False)
        if backlog is not None:
            self.write_limit = backlog.check_every  # ready() is False from there: the backlog check is send's

    async def send(self, data: bytes) -> bool:
        """Write; False once the client is gone or, with ``too_slow`` set, has read too slowly (the caller stops
        producing). After ``too_slow`` the writer writes without waiting, for the caller's error event."""
        self.write(data)  # with what write_soon queued in front, in one write
        if self.closed:
            return False
        if self.backlog is not None and self.written >= self.write_limit:
            return await self._wait_for_reader(self.backlog)
        return True

    async def _wait_for_reader(self, backlog: ClientBacklog) -> bool:
        self.write_limit = self.written + backlog.check_every
        try:
            if await backlog.wait_for_reader(self.written):
                return True
        except SlowReader as error:
            # kept without its traceback, whose frames hold this writer: Granian ends the response only when the
            # transport is freed, which a reference cycle would put off until the garbage collector runs
            self.too_slow, self.backlog = error.with_traceback(None), None
            self.write_limit = sys.maxsize
            return False
        self.closed = True
        return False


def open_stream(gateway: Gateway, scope, proto, headers: list[tuple[str, str]]) -> StreamWriter:
    """Start a streamed 200 response with ``headers``; its writer bounds what a slow client leaves unread
    (``--max-stream-backlog-mb``)."""
    backlog = ClientBacklog.watch(gateway.tcp_diag, scope.server, scope.client, gateway.settings.limits,
                                  gateway.metrics)
    return StreamWriter(proto.response_stream(200, headers), backlog, gateway.loop)


class StreamEnd(enum.Enum):
    """How :func:`stream_deltas` ended."""

    FINISHED = "finished"  # every choice finished; the door sends its closing events
    FAILED = "failed"  # a worker failed the request, or the client read too slowly; the error event is sent
    CLIENT_GONE = "client_gone"  # the client left; the generations are aborted


async def stream_deltas(writer: StreamWriter, generations: list[Generation], encode: Callable[[int, Delta], bytes],
                        encode_error: Callable[[RequestError], bytes], *,
                        plain_event: TextEvent | None = None) -> StreamEnd:
    """Write every choice's deltas as ``encode(choice index, delta)`` makes them, as they arrive (nothing is
    written for empty bytes); a worker's failure as ``encode_error(error)``. Each engine output is its own
    delta (one SSE event) unless ``--stream-coalesce`` folds what a stream has queued into one; the events of
    the outputs that arrived together go out in one write, and so do the last events and the door's closing ones
    (they are written in the same loop turn). ``plain_event``: the event ``encode`` makes of the
    first choice's delta of text alone, if that is all it makes of one (such outputs may then be written by the
    native plain-token path)."""
    per_output = not generations[0].gateway.settings.stream_coalesce
    try:
        if len(generations) == 1:  # the common case, without choice_batches' extra hop per batch
            if per_output:  # plain token events are written where they arrive (Generation.write_directly)
                generations[0].write_directly(writer.ready, lambda delta: _write_soon(writer, encode(0, delta)),
                                              plain_event, writer)
            async with aclosing(generations[0].batches(per_output=per_output)) as single:
                async for deltas in single:
                    out = _encoded(encode, 0, deltas)
                    if out and not await _put(writer, out):
                        return await _stopped(writer, encode_error)  # closing the batches aborts the generation
        else:
            async with aclosing(choice_batches(generations, per_output=per_output)) as batches:
                async for index, deltas in batches:
                    out = _encoded(encode, index, deltas)
                    if out and not await _put(writer, out):
                        return await _stopped(writer, encode_error)  # closing `batches` aborts the generations
    except RequestError as error:
        return StreamEnd.FAILED if await writer.send(encode_error(error)) else StreamEnd.CLIENT_GONE
    return StreamEnd.CLIENT_GONE if any(generation.client_gone for generation in generations) else StreamEnd.FINISHED


def _write_soon(writer: StreamWriter, data: bytes) -> bool:
    return not data or writer.write_soon(data)


async def _put(writer: StreamWriter, data: bytes) -> bool:
    """Write ``data`` at the end of this loop turn when it keeps the writer below its limit (with the other events
    of the turn, or the door's closing events, sent in the same turn: one write), else now, and wait for a slow
    reader as :meth:`StreamWriter.send` does: the batch that reaches the limit is followed by the check."""
    return writer.write_soon(data) if writer.fits(len(data)) else await writer.send(data)


def _encoded(encode: Callable[[int, Delta], bytes], index: int, deltas: list[Delta]) -> bytes:
    return encode(index, deltas[0]) if len(deltas) == 1 else b"".join([encode(index, delta) for delta in deltas])


async def _stopped(writer: StreamWriter, encode_error: Callable[[RequestError], bytes]) -> StreamEnd:
    """The client left, or read too slowly: then the error event says so (written without waiting)."""
    if writer.too_slow is None:
        return StreamEnd.CLIENT_GONE
    return StreamEnd.FAILED if await writer.send(encode_error(writer.too_slow)) else StreamEnd.CLIENT_GONE
