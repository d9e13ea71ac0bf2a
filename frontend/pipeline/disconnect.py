"""Watching for a client that goes away, without leaking the watcher, and without paying for it on short requests.

Granian's ``client_disconnect()`` awaitable keeps its done callbacks after it is cancelled and is not seen by
the garbage collector, so a callback that is merely cancelled keeps whatever it references (a whole
generation) alive for good. :meth:`DisconnectWatch.stop` removes the callback before cancelling.

Asking Granian for that awaitable starts a task on its Rust runtime (a wake-up of its thread) and cancelling it
another, for every request. A request is therefore watched only once it has run for ``WATCH_AFTER_S``: most
unary requests and short streams are over sooner and never pay. A client that left earlier is still seen: Granian
keeps a closed connection's notice until the watch asks, so the request is cancelled at most ``WATCH_AFTER_S``
late.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

WATCH_AFTER_S = 0.05

DisconnectSource = Callable[[], Awaitable[None]]
"""What gives the awaitable that completes when the client disconnects (Granian: ``proto.client_disconnect``)."""


class DisconnectWatch:
    """Calls ``on_disconnect()`` once if the client disconnects before :meth:`stop`."""

    __slots__ = ("_disconnected", "_future", "_on_disconnect", "_timer")

    def __init__(self, disconnected: DisconnectSource, on_disconnect: Callable[[], None]) -> None:
        self._disconnected = disconnected
        self._on_disconnect = on_disconnect
        self._future: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._timer = None
        self._future = asyncio.ensure_future(self._disconnected())
        self._future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future) -> None:
        if not future.cancelled():
            self._on_disconnect()

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        future, self._future = self._future, None
        if future is not None:
            future.remove_done_callback(self._done)
            future.cancel()
