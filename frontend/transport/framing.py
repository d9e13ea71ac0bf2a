"""Length-prefixed frames over an asyncio TCP connection: the request plane's wire (``protocol/engine.py``).

A frame is a 4-byte little-endian payload length, then the payload. Several frames written together are one
``write`` (one ``send`` system call, one wake-up of the peer); the reader takes every complete frame a read
brought and keeps the tail of a partial one. Neither side has a helper thread: the event loop reads and writes
the socket itself, where ZeroMQ put an I/O thread on each side of every message (measured on this 2-core VM,
an idle round trip between two uvloop processes: ~206 µs through ZeroMQ DEALER/ROUTER, ~12 µs on plain TCP).

A frame longer than ``max_frame_bytes`` is a protocol error: the connection is closed (nothing buffers it).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Final

HEADER: Final = struct.Struct("<I")
MAX_FRAME_BYTES: Final = 1 << 30  # 1 GiB: the largest reply (an encoded video) is far below it

log = logging.getLogger(__name__)


def frame(payload: bytes) -> bytes:
    """``payload`` as one frame (header and payload)."""
    return HEADER.pack(len(payload)) + payload


def frames(payloads: list[bytes]) -> bytes:
    """Several payloads as consecutive frames, for one write."""
    pack = HEADER.pack
    parts = []
    for payload in payloads:
        parts.append(pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def tcp_address(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (``HOST`` an IPv6 address in brackets or bare) as ``(host, port)``."""
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"not a tcp:// endpoint: {endpoint!r}")
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    return host.strip("[]"), int(port)


def endpoint_of(host: str, port: int) -> str:
    """The ``tcp://`` endpoint to advertise for a socket bound to ``host:port``."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class FramedProtocol(asyncio.Protocol):
    """An asyncio protocol that calls :meth:`on_frame` for every frame received, in order. Subclasses implement
    ``on_frame`` and may extend ``connection_made`` / ``connection_lost`` (calling these)."""

    max_frame_bytes = MAX_FRAME_BYTES

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._partial = bytearray()  # the start of a frame whose end has not arrived
        self._needed = 0  # the length ``_partial`` must reach to hold that frame (4: its header)
        self.heard = False  # something arrived since the owner last cleared it (heartbeats)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._partial = bytearray()

    def on_frame(self, payload: memoryview) -> None:
        """One frame's payload; valid only during the call (decode it, do not keep it)."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        self.heard = True
        partial = self._partial
        if partial:  # more of a frame: read once the frame is whole (no copy of a long frame per chunk)
            partial += data
            if len(partial) < self._needed:
                return
            data = bytes(partial)
            partial.clear()
        used = self._take_frames(memoryview(data))
        if used < len(data):
            partial += data[used:]
            self._needed = 4 + HEADER.unpack_from(partial)[0] if len(partial) >= 4 else 4

    def _take_frames(self, view: memoryview) -> int:
        """Hand every complete frame of ``view`` to ``on_frame``; how many bytes they used."""
        unpack, end, start = HEADER.unpack_from, len(view), 0
        on_frame, limit = self.on_frame, self.max_frame_bytes
        while end - start >= 4:
            (size,) = unpack(view, start)
            if size > limit:
                self._oversized(size)
                return end
            stop = start + 4 + size
            if stop > end:
                break
            on_frame(view[start + 4:stop])
            transport = self.transport
            if transport is None or transport.is_closing():  # on_frame closed the connection
                return end
            start = stop
        return start

    def _oversized(self, size: int) -> None:
        log.warning("request-plane frame over the limit: closing the connection",
                    extra={"frame_bytes": size, "limit": self.max_frame_bytes})
        if self.transport is not None:
            self.transport.abort()
