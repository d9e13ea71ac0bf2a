# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Dynamo-compatible KV block hashes (XXH3-64, seed 1337), built as ``frontend.kv.blockhash``.

    local[i] = XXH3_64(tokens of block i as little-endian u32 bytes, seed=1337)   full blocks only
    seq[0]   = local[0]                                          (or XXH3_64(parent || local[0]) after a parent)
    seq[i]   = XXH3_64(LE u64 seq[i-1] || LE u64 local[i], seed=1337)             16 bytes

A trailing partial block is ignored. Results are ``array('Q')`` (machine-order u64; ``.tobytes()`` for the
wire). Token input: a list/tuple of ints (converted once, in C) or any C-contiguous buffer of 4-byte ints
(``array('I')``, numpy uint32/int32), used in place. See ``frontend/kv/index_reference.py`` for the
pure-Python twin. The GIL is kept: a prompt hashes in microseconds.
"""

from cpython cimport array
from libc.stdint cimport uint32_t, uint64_t

from intbuf cimport IntArray, ints_acquire, ints_release

import array as _array_module

XXH3_SEED = 1337

cdef array.array _U64_TEMPLATE = _array_module.array("Q")


cdef inline array.array _new_u64(Py_ssize_t n):
    return array.clone(_U64_TEMPLATE, n, False)


def local_block_hashes(tokens, Py_ssize_t block_size):
    """XXH3 hash of each full block of ``block_size`` tokens (Dynamo's ``LocalBlockHash``)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    cdef IntArray toks
    ints_acquire(tokens, &toks, 4, block_size)
    cdef Py_ssize_t nblocks = toks.n // block_size
    cdef array.array out
    try:
        out = _new_u64(nblocks)
        kvb_local_hashes(<const uint32_t*>toks.data, nblocks, block_size, <uint64_t*>out.data.as_ulonglongs)
    finally:
        ints_release(&toks)
    return out


def block_hashes(tokens, Py_ssize_t block_size):
    """Chained sequence hash of each full block of ``block_size`` tokens (what the router indexes)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    cdef IntArray toks
    ints_acquire(tokens, &toks, 4, block_size)
    cdef Py_ssize_t nblocks = toks.n // block_size
    cdef array.array out
    cdef uint64_t* h
    try:
        out = _new_u64(nblocks)
        h = <uint64_t*>out.data.as_ulonglongs
        kvb_local_hashes(<const uint32_t*>toks.data, nblocks, block_size, h)
        kvb_chain(False, 0, h, nblocks, h)
    finally:
        ints_release(&toks)
    return out


def chain(parent_seq_hash, local_hashes):
    """Sequence hashes of blocks whose local hashes are given, following ``parent_seq_hash`` (None: a
    sequence that starts at these blocks)."""
    cdef bint has_parent = parent_seq_hash is not None
    cdef uint64_t parent = <uint64_t>parent_seq_hash if has_parent else 0
    cdef IntArray local
    ints_acquire(local_hashes, &local, 8, 1)
    cdef array.array out
    try:
        out = _new_u64(local.n)
        kvb_chain(has_parent, parent, <const uint64_t*>local.data, local.n, <uint64_t*>out.data.as_ulonglongs)
    finally:
        ints_release(&local)
    return out


def sequence_hash(parent_seq_hash: int, local_hash: int) -> int:
    """One chaining step: XXH3_64(LE u64 parent || LE u64 local, seed 1337)."""
    return kvb_seq_hash(<uint64_t>parent_seq_hash, <uint64_t>local_hash)
