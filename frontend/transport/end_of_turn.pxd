# C-level declarations of end_of_turn.pyx (built as frontend.transport.end_of_turn), for the native modules that
# queue bytes on a writer without a Python call (frontend.postprocess.plain_tokens).

cdef class EndOfTurn:
    cdef readonly object loop
    cdef list _due
    cdef object __weakref__

    cpdef add(self, item)


cdef class TurnWriter:
    cdef public object transport
    cdef public bint closed
    cdef public Py_ssize_t written
    cdef public Py_ssize_t write_limit
    cdef list _queued
    cdef Py_ssize_t _queued_bytes
    cdef bint _flush_due
    cdef EndOfTurn _turn

    cdef bint is_ready(self)
    cdef bint queue(self, bytes data) except -1
    cdef int flush_queued(self) except -1
    cdef int write_now(self, bytes data) except -1
