# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Work held until the end of an event-loop turn, so that what one turn produces goes out together; built as
``frontend.transport.end_of_turn``.

An object with a ``flush()`` method is added to an :class:`EndOfTurn` when it first holds something in a turn; one
``call_soon`` for all of them flushes each once, after the callbacks that were already ready (the rest of what
arrived with the first). The gateway's worker connections use it to send a turn's requests in one write.

:class:`TurnWriter` is such an object for a stream of bytes to one client (the HTTP door's ``StreamWriter`` builds
on it): what it is given during a turn goes to its transport's ``send_bytes`` in one write at the end of the turn.
It is native so that the plain-token path (``frontend.postprocess.plain_tokens``) queues an event and the turn
flushes it without a Python call per token: in the server each of those calls cost ~0.3-0.5 µs per streamed token.
"""

import asyncio
import sys
import weakref


cdef class EndOfTurn:
    """The objects to flush at the end of this turn of ``loop``."""

    def __init__(self, loop):
        self.loop = loop
        self._due = []

    cpdef add(self, item):
        """Flush ``item`` at the end of this turn (add it once per turn: when it first holds something)."""
        if not self._due:
            self.loop.call_soon(self._flush)
        self._due.append(item)

    def _flush(self):
        due, self._due = self._due, []
        for item in due:
            if isinstance(item, TurnWriter):
                (<TurnWriter>item).flush_queued()
            else:
                item.flush()


_PER_LOOP = weakref.WeakKeyDictionary()


def end_of_turn(loop=None):
    """The shared :class:`EndOfTurn` of ``loop`` (default: the running loop). Give the loop where it is known, and
    look this up once per object that uses it, not per use: ``asyncio.get_running_loop()`` makes a ``getpid()``
    system call (it checks the loop is this process's)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    turn = _PER_LOOP.get(loop)
    if turn is None:
        turn = _PER_LOOP[loop] = EndOfTurn(loop)
    return turn


cdef class TurnWriter:
    """Bytes for one client's stream transport (an object with Granian's ``send_bytes(data)``, whose awaitable only
    reports the outcome: it ends at once, or raises). :meth:`write_soon` queues bytes for the end of the turn,
    :meth:`write` writes at once (with what is queued, in front), :meth:`write_later` queues bytes for the next
    write. Once a write fails (the client left),
    ``closed`` is set and nothing more is written.

    ``written`` counts the bytes handed to the transport; :meth:`ready` is False once it reaches ``write_limit``
    (a subclass sets it where it wants to look at the client before writing on; ``sys.maxsize``: never)."""

    def __init__(self, transport, EndOfTurn turn):
        self.transport = transport
        self.closed = False
        self.written = 0
        self.write_limit = sys.maxsize
        self._queued = []
        self._queued_bytes = 0
        self._flush_due = False
        self._turn = turn

    def ready(self):
        """Whether :meth:`write_soon` may be used: the client is there and ``written`` is below ``write_limit``."""
        return self.is_ready()

    def write_later(self, bytes data):
        """Queue ``data`` without a write of its own: it goes out in front of the next write (the end-of-turn one
        of :meth:`write_soon`, or :meth:`write`). Nothing once the client is gone."""
        if not self.closed:
            self._queued.append(data)
            self._queued_bytes += len(data)

    def fits(self, Py_ssize_t size):
        """Whether ``size`` more bytes may be queued with :meth:`write_soon`: the client is there, and what is
        written and queued stays below ``write_limit`` with them (else write now, and look at the client)."""
        return not self.closed and self.written + self._queued_bytes + size < self.write_limit

    def write_soon(self, bytes data):
        """Write at the end of this event-loop turn, with whatever else the turn writes to this client (one write
        for several events), without a wait; use it when :meth:`ready`. False once the client is gone."""
        return self.queue(data)

    def flush(self):
        """Write what :meth:`write_soon` queued, in one write."""
        self.flush_queued()

    def write(self, bytes data):
        """Write what is queued and ``data``, now, in one write (nothing once the client is gone)."""
        queued = self._queued
        if queued:
            queued.append(data)
            self._queued_bytes += len(data)
            self.flush_queued()
        else:
            self.write_now(data)

    cdef bint is_ready(self):
        return not self.closed and self.written < self.write_limit

    cdef bint queue(self, bytes data) except -1:
        if self.closed:
            return False
        if not self._flush_due:
            self._flush_due = True
            self._turn.add(self)
        self._queued.append(data)
        self._queued_bytes += len(data)
        return True

    cdef int flush_queued(self) except -1:
        self._flush_due = False
        queued = self._queued
        if queued:
            self._queued = []
            self._queued_bytes = 0
            self.write_now(queued[0] if len(queued) == 1 else b"".join(queued))
        return 0

    cdef int write_now(self, bytes data) except -1:
        """Hand ``data`` to the transport (nothing once the client is gone)."""
        if self.closed:
            return 0
        try:
            for _ in self.transport.send_bytes(data):
                break
        except Exception:  # granian's ProtocolClosed (or a connection error): the peer left
            self.closed = True
            return 0
        self.written += len(data)
        return 0
