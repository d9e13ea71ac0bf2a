"""Request decoding and the SSE stream writer shared by the generation endpoints."""

from __future__ import annotations

import msgspec

from ..protocol.errors import InvalidRequest
from .reply import validation_error


def decode_request(decoder: msgspec.json.Decoder, body: bytes):
    """Decode and validate a JSON body; any problem is a 400 naming the field."""
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, param = validation_error(exc)
        raise InvalidRequest(message, param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from None


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
