# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The streamed plain-text token in one native call, built as ``frontend.postprocess.plain_tokens``.

A streamed choice whose output needs no stop strings, text stages, output parser or logprobs, with a byte-level
tokenizer (``frontend/postprocess/detokenizer.py``: each token's own text from the shared piece table), turns each
engine output into one SSE event. :meth:`PlainTokens.write` does for such an output exactly what the Python path
does (``OutputPipeline.feed``, the metrics observer's and worker timing's ``tokens``, the door's text event, the
writer's ``write_soon``), in one call:

- the text from the piece table, the detokenizer's window left as its own piece path leaves it;
- the pipeline's ``completion_tokens``;
- one inter-token latency observation for the request's model (its histogram updated in place) and the
  worker's latest inter-token latency, from one clock reading;
- the event: the door's template prefix, the text as a JSON string, the suffix (none for no text);
- the event queued on the stream's ``TurnWriter`` (``frontend.transport.end_of_turn``), written at the end of the
  loop turn.

:meth:`PlainTokens.take` is the gateway's way in (``EngineClient``, for each output of a worker's message whose
stream has a plain writer and a reader waiting with nothing queued): it checks the output is plain text (no
finish, failure, logprobs or cached-token count) and the writer ready, writes it, and keeps the tokens for a
migration. From the worker's bytes to the queued event, no Python function runs.

Anything else (a token that is part of a character or decodes to U+FFFD, a detokenizer window that is not at a
clean boundary, a request whose first token is still to come) returns ``NOT_PLAIN`` before changing anything: the
caller takes the Python path. Measured in the
server, the Python path's detokenize, metrics and encode cost ~4 µs per token (docs/BENCHMARKS.md); the Python it
replaces is a dozen calls with their frames.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.list cimport PyList_GET_ITEM
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import logging

import msgspec


cdef extern from "Python.h":
    int PyUnicode_IS_ASCII(object)
    Py_ssize_t PyLong_AsSsize_t(object)  # -1 with an error set for a non-int or one out of range: checked
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

WRITTEN = 1
NOT_PLAIN = 0
CLIENT_GONE = -1

log = logging.getLogger(__name__)

cdef str _ITL_LATEST = "worker_last_inter_token_latency_seconds"
cdef object _json_encode = msgspec.json.encode  # the doors' encoder (http/reply.json_encode)


cdef inline bint _json_plain(const char* data, Py_ssize_t size):
    """Whether ASCII ``data`` is its own JSON string body (no quote, backslash or control character)."""
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(size):
        c = <unsigned char>data[i]
        if c < 0x20 or c == 0x22 or c == 0x5c:
            return False
    return True


cdef class PlainTokens:
    """Writes one streamed choice's plain outputs (see the module docstring). Made when the stream starts; it
    leaves every output to the Python path until the request's first token was counted there (time to first
    token). Every object it is given stays the choice's own for the stream's life; the generation drops it when
    the stream ends (it holds the writer, and the generation's ``cancel``)."""

    def __cinit__(self):
        self.itl_bounds = NULL

    def __init__(self, pipeline, observer, timing, bytes prefix, bytes suffix, TurnWriter writer,
                 list output_ids=None, cancel=None):
        """``pipeline``: the choice's ``OutputPipeline`` (``plain_text``: its detokenizer has a piece table);
        ``observer``: its ``GenerationObserver``; ``timing``: its ``WorkerTiming``; ``prefix``/``suffix``: the
        door's text event around the JSON string of the text; ``writer``: the response's; ``output_ids``: the
        generation's tokens so far, which :meth:`take` extends (None: not kept); ``cancel()``: what :meth:`take`
        calls when writing fails."""
        metrics = observer.metrics
        bounds, state = metrics.histogram_state("inter_token_latency_seconds", observer.labels)
        self.n_bounds = len(bounds)
        self.itl_bounds = <double*>malloc(max(self.n_bounds, 1) * sizeof(double))
        if self.itl_bounds == NULL:
            raise MemoryError()
        for i in range(self.n_bounds):
            self.itl_bounds[i] = bounds[i]
        self.itl_state = state
        self.latest = metrics.latest
        self.pipeline = pipeline
        self.detokenizer = pipeline.detokenizer
        self.table = self.detokenizer.pieces
        self.texts = self.table.texts  # never resized: its length is kept
        self.n_texts = len(self.texts)
        self.observer = observer
        self.timing = timing
        self.prefix = prefix
        self.suffix = suffix
        self.writer = writer
        self.output_ids = output_ids
        self.cancel = cancel
        self.first_token_seen = False
        self.latest_labels = self.latest_key = None

    def __dealloc__(self):
        free(self.itl_bounds)

    cdef object _piece(self, object token_id):
        """``token_id``'s text from the table (a C index), decoded by the table when not seen yet."""
        cdef Py_ssize_t index = PyLong_AsSsize_t(token_id)
        if index == -1 and PyErr_Occurred():
            PyErr_Clear()  # not a vocabulary id: the table decodes it (and fails as the Python path does)
        elif 0 <= index < self.n_texts:
            piece = <object>PyList_GET_ITEM(self.texts, index)
            if piece is not False:
                return piece
        return self.table.piece(token_id)

    cdef object _text(self, list token_ids):
        """The text of ``token_ids`` from the piece table, or None when one is not self-contained."""
        cdef Py_ssize_t n = len(token_ids)
        if n == 1:
            return self._piece(token_ids[0])
        parts = []
        for token_id in token_ids:
            piece = self._piece(token_id)
            if piece is None:
                return None
            parts.append(piece)
        return "".join(parts)

    cpdef bint take(self, output) except -1:
        """Write ``output`` (a ``RequestOutput``) if it is plain text and the writer is ready: True when it was
        taken, False to leave it to the Python path with nothing changed. A client that has gone is the Python
        path's (the writer is not ready, so :meth:`write` never meets a refusal here). A failure here cancels this
        stream only, not the other streams of the worker's message."""
        if (output.finish_reason is not None or output.retryable or output.logprobs or output.cached_tokens
                or self.pipeline.finish_reason is not None or not self.writer.is_ready()):
            return False
        token_ids = output.token_ids
        if not token_ids:
            return False
        try:
            written = self.write(token_ids)
            if written == NOT_PLAIN:
                return False
            if self.output_ids is not None:
                self.output_ids.extend(token_ids)
        except Exception:
            log.exception("streaming an output failed", extra={"request_id": output.request_id})
            self.cancel()
        return True

    cpdef int write(self, list token_ids) except -2:
        """Write the event of an output of ``token_ids`` (not empty): ``WRITTEN``, ``CLIENT_GONE`` (the writer
        refused: the caller cancels), or ``NOT_PLAIN`` with nothing changed."""
        if not self.first_token_seen:
            if not self.observer.first_token_seen:  # the worker's first outputs carried no token: TTFT is due
                return NOT_PLAIN
            self.first_token_seen = True  # for good
        detokenizer = self.detokenizer
        cdef list ids = detokenizer._ids
        if detokenizer._read != len(ids):  # not at a clean boundary: the general path decodes
            return NOT_PLAIN
        text = self._text(token_ids)
        if text is None:
            return NOT_PLAIN
        cdef Py_ssize_t count = len(token_ids)
        last = token_ids[count - 1]
        # the window becomes the last id, fully read, as IncrementalDetokenizer._from_pieces leaves it (the list is
        # the detokenizer's own: reused when it holds one id)
        if len(ids) == 1:
            ids[0] = last
        else:
            detokenizer._ids = [last]
            detokenizer._read = 1
        detokenizer._done_len = PyUnicode_GET_LENGTH(text if count == 1 else self._piece(last))
        detokenizer._held_steps = 0
        self.pipeline.completion_tokens += count
        self._count(count)
        if PyUnicode_GET_LENGTH(text) == 0:  # a skipped special token: the doors write no event for no text
            return WRITTEN
        return WRITTEN if self.writer.queue(self._event(text)) else CLIENT_GONE

    cdef void _count(self, Py_ssize_t count) except *:
        """``GenerationObserver.tokens`` and ``WorkerTiming.tokens`` for a later token, from one clock reading."""
        cdef timespec clock
        clock_gettime(CLOCK_MONOTONIC, &clock)  # time.perf_counter()'s clock on Linux, without the call
        cdef double now = clock.tv_sec + clock.tv_nsec * 1e-9
        observer = self.observer
        cdef double gap = (now - <double>observer.last_token_at) / count
        cdef Py_ssize_t low = 0, high = self.n_bounds, middle
        while low < high:  # bisect_left
            middle = (low + high) // 2
            if self.itl_bounds[middle] < gap:
                low = middle + 1
            else:
                high = middle
        state = self.itl_state
        state[low] = state[low] + count
        state[self.n_bounds + 1] = state[self.n_bounds + 1] + gap * count  # the sum, after the +Inf bucket
        observer.last_token_at = now
        timing = self.timing
        labels = timing.labels
        if labels is not self.latest_labels:  # another worker's (after a migration)
            self.latest_labels = labels
            self.latest_key = (_ITL_LATEST, labels)
        # set_latest without its comparison: this loop's clock only moves on, so no value in this process's table
        # is later than now
        self.latest[self.latest_key] = ((now - <double>timing.last_at) / count, now)
        timing.last_at = now

    cdef bytes _event(self, str text):
        """prefix + JSON string of ``text`` + suffix, in one allocation."""
        cdef Py_ssize_t size
        cdef const char* utf8
        if PyUnicode_IS_ASCII(text):
            utf8 = PyUnicode_AsUTF8AndSize(text, &size)
            if _json_plain(utf8, size):
                return self._joined(utf8, size, True)
        body = _json_encode(text)
        return self._joined(PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), False)

    cdef bytes _joined(self, const char* middle, Py_ssize_t size, bint quote):
        cdef Py_ssize_t head = PyBytes_GET_SIZE(self.prefix), tail = PyBytes_GET_SIZE(self.suffix)
        cdef Py_ssize_t quotes = 2 if quote else 0
        event = PyBytes_FromStringAndSize(NULL, head + size + quotes + tail)
        cdef char* out = PyBytes_AS_STRING(event)
        memcpy(out, PyBytes_AS_STRING(self.prefix), head)
        out += head
        if quote:
            out[0] = 34  # '"'
            out += 1
        memcpy(out, middle, size)
        out += size
        if quote:
            out[0] = 34
            out += 1
        memcpy(out, PyBytes_AS_STRING(self.suffix), tail)
        return event
