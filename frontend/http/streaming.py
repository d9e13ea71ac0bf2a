"""Request decoding, the stream writer, and the one loop that streams generations to a client.

:func:`stream_deltas` is what every streamed front door (chat, completions, Responses, Messages) runs: each
choice's deltas, encoded by the door's ``encode``, written as they come; a worker's failure encoded by the
door's ``encode_error``. The door only says how a delta and an error look on its wire.
"""

from __future__ import annotations

import enum
from contextlib import aclosing
from typing import Callable

import msgspec

from ..pipeline.generation import Generation, choice_deltas
from ..postprocess.pipeline import Delta
from ..protocol.errors import InvalidRequest, RequestError
from ..protocol.limits import depth_problem, json_depth_exceeds
from .reply import validation_error


def decode_request(decoder: msgspec.json.Decoder, body: bytes):
    """Decode and validate a JSON body; any problem is a 400 naming the field. A body nested more than
    ``MAX_JSON_DEPTH`` levels deep is refused before decoding (``protocol/limits.py``)."""
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    if json_depth_exceeds(body):
        raise InvalidRequest(depth_problem())
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, param = validation_error(exc)
        raise InvalidRequest(message, param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from None
    except RecursionError:  # not reached after the depth check; kept so that no nesting is ever a 500
        raise InvalidRequest(depth_problem()) from None


class StreamWriter:
    """Writes SSE bytes to a Granian stream transport; remembers when the client has gone."""

    __slots__ = ("transport", "closed")

    def __init__(self, transport) -> None:
        self.transport = transport
        self.closed = False

    async def send(self, data: bytes) -> bool:
        """Write; False once the client is gone (the caller stops producing)."""
        if self.closed:
            return False
        try:
            await self.transport.send_bytes(data)
        except Exception:  # granian raises ProtocolClosed (or a connection error) when the peer left
            self.closed = True
            return False
        return True


class StreamEnd(enum.Enum):
    """How :func:`stream_deltas` ended."""

    FINISHED = "finished"  # every choice finished; the door sends its closing events
    FAILED = "failed"  # a worker failed the request; its error event is sent
    CLIENT_GONE = "client_gone"  # the client left; the generations are aborted


async def stream_deltas(writer: StreamWriter, generations: list[Generation], encode: Callable[[int, Delta], bytes],
                        encode_error: Callable[[RequestError], bytes]) -> StreamEnd:
    """Write every choice's deltas as ``encode(choice index, delta)`` makes them, as they arrive (nothing is
    written for empty bytes); a worker's failure as ``encode_error(error)``."""
    try:
        if len(generations) == 1:  # the common case, without choice_deltas' extra hop per delta
            async with aclosing(generations[0].deltas()) as single:
                async for delta in single:
                    out = encode(0, delta)
                    if out and not await writer.send(out):
                        return StreamEnd.CLIENT_GONE  # closing the deltas aborts the generation
        else:
            async with aclosing(choice_deltas(generations)) as deltas:
                async for index, delta in deltas:
                    out = encode(index, delta)
                    if out and not await writer.send(out):
                        return StreamEnd.CLIENT_GONE  # closing `deltas` aborts the generations still running
    except RequestError as error:
        return StreamEnd.FAILED if await writer.send(encode_error(error)) else StreamEnd.CLIENT_GONE
    return StreamEnd.CLIENT_GONE if any(generation.client_gone for generation in generations) else StreamEnd.FINISHED
