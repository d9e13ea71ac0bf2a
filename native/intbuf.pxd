# Turning Python inputs into C arrays of uint32 (token ids) or uint64 (block hashes).
#
# Shared by blockhash.pyx and kvindex.pyx. Everything here is inline (C or Cython), so cimporting this file
# imports nothing at run time.
#
# Accepted inputs:
#   - a list or tuple of ints (any other iterable is turned into a list first): converted once, in C, with a
#     fast path that reads exact ints below 2**64 straight from the int object (3.11; 3.12+: small ints);
#   - any C-contiguous buffer whose items are integers of the wanted width (array('I') / numpy uint32 or
#     int32 for tokens, array('Q') / numpy uint64 or int64 for hashes), used in place (zero copy);
#   - raw bytes (bytes, bytearray, memoryview of format 'B') holding such integers in the machine's byte
#     order, used in place too (block hashes travel as bytes on the wire).
# Token arrays are handed to XXH3 as little-endian bytes; on a big-endian machine they are byte-swapped into
# a copy.

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from cpython.buffer cimport PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_C_CONTIGUOUS
from cpython.ref cimport PyObject

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define IB_BIG_ENDIAN 1
    #define ib_le32(x) __builtin_bswap32(x)
    #else
    #define IB_BIG_ENDIAN 0
    #define ib_le32(x) (x)
    #endif

    /* Value of an int-like object the fast path did not take (bools, big or negative ints, numpy ints). */
    static int ib_slow_u64(PyObject *o, uint64_t limit, Py_ssize_t index, uint64_t *out) {
        PyObject *num = PyLong_CheckExact(o) ? (Py_INCREF(o), o) : PyNumber_Index(o);
        if (num == NULL) {
            PyErr_Format(PyExc_TypeError, "item %zd is %.100s, not an int", index, Py_TYPE(o)->tp_name);
            return -1;
        }
        unsigned long long v = PyLong_AsUnsignedLongLong(num);
        Py_DECREF(num);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
            PyErr_Clear();
            goto out_of_range;
        }
        if (v > limit) goto out_of_range;
        *out = (uint64_t)v;
        return 0;
    out_of_range:
        PyErr_Format(PyExc_OverflowError, "item %zd is out of range (0..%llu)", index, (unsigned long long)limit);
        return -1;
    }

    /* Value of a non-negative exact int below 2**64, read without calling into CPython when the int's
       layout allows; 0 = take the slow path. */
    static inline int ib_small(PyObject *o, uint64_t *out) {
        if (!PyLong_CheckExact(o)) return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (!PyUnstable_Long_IsCompact((PyLongObject *)o)) return 0;
        Py_ssize_t v = PyUnstable_Long_CompactValue((PyLongObject *)o);
        if (v < 0) return 0;
        *out = (uint64_t)v;
        return 1;
    #else
        const digit *d = ((PyLongObject *)o)->ob_digit;
        switch (Py_SIZE(o)) {
        case 0: *out = 0; return 1;
        case 1: *out = (uint64_t)d[0]; return 1;
    #if PYLONG_BITS_IN_DIGIT == 30
        case 2: *out = (uint64_t)d[0] | ((uint64_t)d[1] << 30); return 1;
        case 3:
            if (d[2] >= 16) return 0;
            *out = (uint64_t)d[0] | ((uint64_t)d[1] << 30) | ((uint64_t)d[2] << 60);
            return 1;
    #endif
        default: return 0;
        }
    #endif
    }

    /* items[0..n) of a list or tuple into little-endian uint32 token ids. */
    static int ib_items_to_u32(PyObject **items, Py_ssize_t n, uint32_t *out) {
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t v;
            if (!ib_small(items[i], &v) || v > 0xFFFFFFFFu) {
                if (ib_slow_u64(items[i], 0xFFFFFFFFu, i, &v) < 0) return -1;
            }
            out[i] = ib_le32((uint32_t)v);
        }
        return 0;
    }

    /* items[0..n) of a list or tuple into native uint64 values. */
    static int ib_items_to_u64(PyObject **items, Py_ssize_t n, uint64_t *out) {
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t v;
            if (!ib_small(items[i], &v)) {
                if (ib_slow_u64(items[i], UINT64_MAX, i, &v) < 0) return -1;
            }
            out[i] = v;
        }
        return 0;
    }

    /* Does a buffer format describe integers of `width` bytes (or raw bytes)? */
    static int ib_format_ok(const char *fmt, Py_ssize_t itemsize, Py_ssize_t width) {
        if (fmt == NULL) return itemsize == 1;
        char order = fmt[0];
        if (order == '@' || order == '=' || order == '<' || order == '>' || order == '!') {
            if ((order == '>' || order == '!') != IB_BIG_ENDIAN) return 0;
            fmt++;
        }
        if (fmt[0] == 0 || fmt[1] != 0) return 0;
        if (itemsize == 1) return fmt[0] == 'B' || fmt[0] == 'b' || fmt[0] == 'c';
        if (itemsize != width) return 0;
        return strchr(width == 4 ? "IiLl" : "QqLlNn", fmt[0]) != NULL;
    }

    static void ib_swap32(const uint32_t *src, uint32_t *dst, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dst[i] = ib_le32(src[i]);
    }
    """
    bint IB_BIG_ENDIAN
    int ib_items_to_u32(PyObject** items, Py_ssize_t n, uint32_t* out) except -1
    int ib_items_to_u64(PyObject** items, Py_ssize_t n, uint64_t* out) except -1
    bint ib_format_ok(const char* fmt, Py_ssize_t itemsize, Py_ssize_t width) noexcept
    void ib_swap32(const uint32_t* src, uint32_t* dst, Py_ssize_t n) noexcept nogil

cdef extern from "Python.h":
    object PySequence_Fast(object o, const char* message)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject** PySequence_Fast_ITEMS(object o)


cdef struct IntArray:
    const void* data    # `n` items of `width` bytes (tokens: little-endian)
    Py_ssize_t n
    void* owned         # malloc'd copy when the input was a sequence (freed by ints_release)
    Py_buffer view      # the input's buffer when used in place
    bint has_view


cdef inline int ints_acquire(object obj, IntArray* a, Py_ssize_t width, Py_ssize_t multiple) except -1:
    """Fill `a` with the first floor(len / multiple) * multiple integers of `obj` (width 4 or 8 bytes)."""
    cdef Py_ssize_t n
    a.data = NULL
    a.n = 0
    a.owned = NULL
    a.has_view = False
    if PyObject_CheckBuffer(obj):
        PyObject_GetBuffer(obj, &a.view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS)
        a.has_view = True
        if not ib_format_ok(a.view.format, a.view.itemsize, width) or a.view.len % width:
            fmt = (<bytes>a.view.format).decode("ascii", "replace") if a.view.format != NULL else "B"
            ints_release(a)
            raise TypeError(f"expected a buffer of {width * 8}-bit integers (or raw bytes), got format {fmt!r}")
        n = a.view.len // width
        n -= n % multiple
        a.n = n
        a.data = a.view.buf
        if width == 4 and IB_BIG_ENDIAN and n:
            a.owned = malloc(<size_t>n * 4)
            if a.owned == NULL:
                ints_release(a)
                raise MemoryError()
            ib_swap32(<const uint32_t*>a.view.buf, <uint32_t*>a.owned, n)
            a.data = a.owned
        return 0
    seq = PySequence_Fast(obj, "expected a list of ints or a buffer of integers")
    n = PySequence_Fast_GET_SIZE(seq)
    n -= n % multiple
    if n == 0:
        return 0
    a.owned = malloc(<size_t>n * <size_t>width)
    if a.owned == NULL:
        raise MemoryError()
    try:
        if width == 4:
            ib_items_to_u32(PySequence_Fast_ITEMS(seq), n, <uint32_t*>a.owned)
        else:
            ib_items_to_u64(PySequence_Fast_ITEMS(seq), n, <uint64_t*>a.owned)
    except BaseException:
        ints_release(a)
        raise
    a.n = n
    a.data = a.owned
    return 0


cdef inline void ints_release(IntArray* a) noexcept:
    if a.owned != NULL:
        free(a.owned)
        a.owned = NULL
    if a.has_view:
        PyBuffer_Release(&a.view)
        a.has_view = False
    a.data = NULL
    a.n = 0
