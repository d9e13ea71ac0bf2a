"""The other end of the request plane, played by a test: a client of a worker or a server for a gateway, reading and
writing the frames of ``frontend/transport/framing.py`` with asyncio streams."""

from __future__ import annotations

import asyncio

from frontend.transport.framing import HEADER, frame, tcp_address


class FramedPeer:
    """One connection: ``write`` raw bytes, ``send`` one frame, ``read`` the next frame's payload (None at EOF)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, endpoint: str) -> "FramedPeer":
        return cls(*await asyncio.open_connection(*tcp_address(endpoint)))

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, payload: bytes) -> None:
        self.writer.write(frame(payload))

    async def read(self) -> bytes | None:
        try:
            (size,) = HEADER.unpack(await self.reader.readexactly(4))
            return await self.reader.readexactly(size)
        except asyncio.IncompleteReadError:
            return None

    def close(self) -> None:
        self.writer.close()


class FramedServer:
    """A listening socket on 127.0.0.1 whose accepted connections are :class:`FramedPeer` s (``peers``)."""

    def __init__(self) -> None:
        self.peers: list[FramedPeer] = []
        self.server: asyncio.AbstractServer | None = None
        self.endpoint = ""

    async def start(self) -> "FramedServer":
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.peers.append(FramedPeer(reader, writer))

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.endpoint = f"tcp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        if self.server is not None:
            self.server.close()
