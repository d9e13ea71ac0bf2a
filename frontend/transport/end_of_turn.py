"""Work held until the end of an event-loop turn, so that what one turn produces goes out together.

An object with a ``flush()`` method is added when it first holds something in a turn; one ``call_soon`` for all of
them flushes each once, after the callbacks that were already ready (the rest of what arrived with the first). The
gateway's worker connections use it to send a turn's requests in one write, the streamed responses to write a
turn's token events to a client in one write.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None: ...


class EndOfTurn:
    """The objects to flush at the end of this turn of ``loop``."""

    __slots__ = ("loop", "_due", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: list[Flushable] = []

    def add(self, item: Flushable) -> None:
        """Flush ``item`` at the end of this turn (add it once per turn: when it first holds something)."""
        if not self._due:
            self.loop.call_soon(self._flush)
        self._due.append(item)

    def _flush(self) -> None:
        due, self._due = self._due, []
        for item in due:
            item.flush()


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EndOfTurn] = weakref.WeakKeyDictionary()


def end_of_turn() -> EndOfTurn:
    """The running loop's shared :class:`EndOfTurn`. Look it up once per object that uses it, not per use:
    ``asyncio.get_running_loop()`` makes a ``getpid()`` system call (it checks the loop is this process's)."""
    loop = asyncio.get_running_loop()
    turn = _PER_LOOP.get(loop)
    if turn is None:
        turn = _PER_LOOP[loop] = EndOfTurn(loop)
    return turn
