"""Watching for a client that goes away, without leaking the watcher.

Granian's ``client_disconnect()`` awaitable keeps its done callbacks after it is cancelled and is not seen by
the garbage collector, so a callback that is merely cancelled keeps whatever it references (a whole
generation) alive for good. :meth:`DisconnectWatch.stop` removes the callback before cancelling.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


class DisconnectWatch:
    """Calls ``on_disconnect()`` once if the client disconnects before :meth:`stop`."""

    __slots__ = ("_future", "_on_disconnect")

    def __init__(self, disconnected: Awaitable[None], on_disconnect: Callable[[], None]) -> None:
        self._on_disconnect = on_disconnect
        self._future: asyncio.Future | None = asyncio.ensure_future(disconnected)
        self._future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future) -> None:
        if not future.cancelled():
            self._on_disconnect()

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        future, self._future = self._future, None
        if future is not None:
            future.remove_done_callback(self._done)
            future.cancel()
