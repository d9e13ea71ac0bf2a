"""Draining plain ZeroMQ sockets from an asyncio loop without a per-message ``await``.

zmq.asyncio costs a future and a loop round trip per message (~350 µs measured on this kind of machine under
load). Instead the loop watches the socket's file descriptor and, when it fires, a callback reads every
queued message with ``NOBLOCK``. ZeroMQ's descriptor is edge-triggered and a *send* can consume the edge,
so every send is followed by a check of ``zmq.EVENTS`` (``after_send``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import zmq

# plain ints: pyzmq's enum members make every ``&`` a Flag construction (on every send)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class SocketDrainer:
    """Calls ``on_message(frames)`` for every multipart message that arrives on ``sock``; with ``multipart=False``
    ``on_message(frame)`` for every frame (a socket whose peers send one frame per message: no per-message
    frame list)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket, on_message: Callable[[Any], None], *,
                 multipart: bool = True) -> None:
        self.loop = loop
        self.sock = sock
        self.on_message = on_message
        self._recv = sock.recv_multipart if multipart else sock.recv
        self._fd = sock.getsockopt(zmq.FD)
        self._scheduled = False
        loop.add_reader(self._fd, self.drain)
        self.after_send()  # input queued before the reader was added raised no edge it could see

    def drain(self) -> None:
        """Read until the socket has nothing more (asked with ``zmq.EVENTS``: cheaper than the ``zmq.Again`` a
        read of an empty socket raises, and it re-arms the descriptor's edge the same way)."""
        self._scheduled = False
        recv = self._recv
        handle = self.on_message
        events = self.sock.getsockopt
        while events(_EVENTS) & _POLLIN:
            handle(recv(zmq.NOBLOCK))

    def after_send(self) -> None:
        """Schedule a drain if input arrived while sending (the edge may have been consumed)."""
        if not self._scheduled and self.sock.getsockopt(_EVENTS) & _POLLIN:
            self._scheduled = True
            self.loop.call_soon(self.drain)

    def close(self) -> None:
        self.loop.remove_reader(self._fd)
        self.sock.close(0)
