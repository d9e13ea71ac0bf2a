"""The worker's end of the request plane: a TCP listener and one :class:`GatewayConnection` per gateway process.

Connections:
    recv_from_gateways  TCP  listen  HOST:random (the advertised ``tcp://`` endpoint)   frames of
                                     ``protocol/engine.py`` in (requests, Ping), out (OutputBatch, unary
                                     replies, Pong); framing in ``transport/framing.py``

The port is bound when the runtime is made, so its endpoint is known before the event loop runs; connections are
accepted from the first registration on. A gateway connection is dropped, and the requests it sent are aborted, when
it closes, when nothing arrives on it for ``GATEWAY_SILENT_S`` (a gateway pings every second), or when more than
``MAX_UNSENT_BYTES`` of outputs wait for it to read (a gateway that stopped reading must not grow this process).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable, Protocol

from ..transport.framing import FramedProtocol, endpoint_of, frame

GATEWAY_SILENT_S = 10.0
MAX_UNSENT_BYTES = 256 << 20  # outputs written but not yet taken by the gateway's kernel
CLOSE_FLUSH_S = 5.0  # on close, how long written outputs may take to reach the gateways

log = logging.getLogger(__name__)


class GatewayHandler(Protocol):
    """What the runtime does with a gateway connection's frames and its end."""

    def on_gateway_frame(self, gateway: "GatewayConnection", payload: memoryview) -> None: ...

    def on_gateway_lost(self, gateway: "GatewayConnection") -> None: ...


class GatewayConnection(FramedProtocol):
    """One gateway process's connection; its frames go to the handler in order."""

    def __init__(self, handler: GatewayHandler, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._handler = handler
        self._loop = loop
        self._silence: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._silence = self._loop.call_later(GATEWAY_SILENT_S, self._check_silence)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        self._handler.on_gateway_lost(self)

    def on_frame(self, payload: memoryview) -> None:
        self._handler.on_gateway_frame(self, payload)

    def _check_silence(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if not self.heard:
            log.warning("a gateway went silent: dropping its connection and its requests")
            transport.abort()
            return
        self.heard = False
        self._silence = self._loop.call_later(GATEWAY_SILENT_S, self._check_silence)

    def write(self, data: bytes) -> None:
        """Write frames (nothing once the connection is gone); past ``MAX_UNSENT_BYTES`` unread, drop it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            log.warning("a gateway does not read its outputs: dropping its connection and its requests",
                        extra={"unsent_bytes": transport.get_write_buffer_size()})
            transport.abort()

    def send(self, payload: bytes) -> None:
        """Write one frame."""
        self.write(frame(payload))


class RequestListener:
    """The listening socket (bound at once) and, once started, the server that accepts gateways on it."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(512)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.endpoint = endpoint_of(host, sock.getsockname()[1])
        self._server: asyncio.AbstractServer | None = None
        self.connections: set[GatewayConnection] = set()

    async def start(self, loop: asyncio.AbstractEventLoop, handler: GatewayHandler) -> None:
        """Accept gateways; each connection's frames go to ``handler``."""
        factory: Callable[[], GatewayConnection] = lambda: self._track(GatewayConnection(handler, loop))
        self._server = await loop.create_server(factory, sock=self._sock)

    def _track(self, connection: GatewayConnection) -> GatewayConnection:
        self.connections.add(connection)
        return connection

    def forget(self, connection: GatewayConnection) -> None:
        self.connections.discard(connection)

    async def close(self, flush_timeout_s: float = CLOSE_FLUSH_S) -> None:
        """Stop accepting and close every gateway connection once what was written to it is sent (outputs of
        requests that finished just before: a gateway may still be reading them), waiting at most
        ``flush_timeout_s``; then drop what is left."""
        if self._server is not None:
            self._server.close()
        else:
            self._sock.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()  # sends what is buffered, then closes
        deadline = asyncio.get_running_loop().time() + flush_timeout_s
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        self.connections.clear()
