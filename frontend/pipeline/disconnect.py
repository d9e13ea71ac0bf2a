"""Watching for a client that goes away, without leaking the watcher, and without paying for it on short requests.

Granian's ``client_disconnect()`` awaitable keeps its done callbacks after it is cancelled and is not seen by
the garbage collector, so a callback that is merely cancelled keeps whatever it references (a whole
generation) alive for good. :meth:`DisconnectWatch.stop` removes the callback before cancelling.

Asking Granian for that awaitable starts a task on its Rust runtime (a wake-up of its thread) and cancelling it
another, for every request. A request is therefore watched only once it has run for ``WATCH_AFTER_S``: most
unary requests and short streams are over sooner and never pay. A client that left earlier is still seen: Granian
keeps a closed connection's notice until the watch asks, so the request is cancelled at most ``WATCH_AFTER_S`` +
``SWEEP_EVERY_S`` late. The watches waiting to start share one timer per event loop (:class:`_Waiting`), which
starts every watch then due and fires at most every ``SWEEP_EVERY_S``: a request costs a queue entry, not a
timer of its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Awaitable, Callable

WATCH_AFTER_S = 0.05
SWEEP_EVERY_S = 0.01

DisconnectSource = Callable[[], Awaitable[None]]
"""What gives the awaitable that completes when the client disconnects (Granian: ``proto.client_disconnect``)."""


class DisconnectWatch:
    """Calls ``on_disconnect()`` once if the client disconnects before :meth:`stop`."""

    __slots__ = ("_disconnected", "_future", "_on_disconnect")

    def __init__(self, loop: asyncio.AbstractEventLoop, disconnected: DisconnectSource,
                 on_disconnect: Callable[[], None]) -> None:
        """``loop``: the running loop, given rather than asked for (``asyncio.get_running_loop()`` makes a
        ``getpid()`` system call per request)."""
        self._disconnected: DisconnectSource | None = disconnected
        self._on_disconnect: Callable[[], None] | None = on_disconnect
        self._future: asyncio.Future | None = None
        _Waiting.add(loop, self)

    def _start(self) -> None:
        if self._disconnected is None:  # stopped before it was due
            return
        self._future = asyncio.ensure_future(self._disconnected())
        self._future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future) -> None:
        if not future.cancelled() and self._on_disconnect is not None:
            self._on_disconnect()

    def stop(self) -> None:
        """Stop watching (idempotent); the owner is no longer referenced from here."""
        self._disconnected = self._on_disconnect = None
        future, self._future = self._future, None
        if future is not None:
            future.remove_done_callback(self._done)
            future.cancel()


class _Waiting:
    """The watches of one event loop that have not started, oldest first, with their due times; one timer at a
    time starts them (none of this references the loop, the key of ``_of_loop``)."""

    __slots__ = ("watches", "scheduled")
    _of_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiting]" = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.watches: deque[tuple[float, DisconnectWatch]] = deque()
        self.scheduled = False

    @classmethod
    def add(cls, loop: asyncio.AbstractEventLoop, watch: DisconnectWatch) -> None:
        waiting = cls._of_loop.get(loop)
        if waiting is None:
            waiting = cls._of_loop[loop] = cls()
        waiting.watches.append((loop.time() + WATCH_AFTER_S, watch))
        if not waiting.scheduled:
            waiting.scheduled = True
            loop.call_later(WATCH_AFTER_S, waiting.sweep, loop)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the watches now due (stopped ones are dropped); come back for the rest."""
        watches, now = self.watches, loop.time()
        while watches and watches[0][0] <= now:
            watches.popleft()[1]._start()
        self.scheduled = bool(watches)
        if watches:
            loop.call_at(max(watches[0][0], now + SWEEP_EVERY_S), self.sweep, loop)
