# C-level declarations of plain_tokens.pyx (built as frontend.postprocess.plain_tokens), for the gateway's native
# delivery loop (frontend.gateway.delivery).

from frontend.transport.end_of_turn cimport TurnWriter


cdef class PlainTokens:
    cdef list texts
    cdef Py_ssize_t n_texts
    cdef object table
    cdef object detokenizer
    cdef object pipeline
    cdef object observer
    cdef list itl_state
    cdef double* itl_bounds
    cdef Py_ssize_t n_bounds
    cdef object timing
    cdef dict latest
    cdef object latest_labels
    cdef tuple latest_key
    cdef bytes prefix
    cdef bytes suffix
    cdef TurnWriter writer
    cdef list output_ids
    cdef object cancel
    cdef bint first_token_seen

    cdef object _piece(self, object token_id)
    cdef object _text(self, list token_ids)
    cpdef bint take(self, output) except -1
    cpdef int write(self, list token_ids) except -2
    cdef void _count(self, Py_ssize_t count) except *
    cdef bytes _event(self, str text)
    cdef bytes _joined(self, const char* middle, Py_ssize_t size, bint quote)
