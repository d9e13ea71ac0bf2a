# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
#
# Shared-memory KV block index: which workers hold which KV blocks, read without locks by every process.
# Built as frontend.kv.kvindex; declarations in frontend/kv/kvindex.pxd; pure-Python twin in
# frontend/kv/index_reference.py (same semantics, used by the differential tests).
#
# Roles
#   One writer process (the indexer, fed by the workers' KV events) creates the segment and is the only one
#   that changes the table and the worker table. Any number of reader processes (the HTTP workers) map the
#   same segment and look requests up directly: no IPC, no lock, a reader never blocks the writer.
#   The per-worker active load and the round-robin counter in the same segment are changed by everyone with
#   atomic adds.
#
# Shared memory
#   A POSIX shared-memory object (shm_open + mmap, i.e. a file in /dev/shm) named per instance,
#   "dyn-kvindex-<pid>-<random>", created with O_EXCL and reserved up front with posix_fallocate (a /dev/shm
#   too small fails at creation with ENOSPC instead of a SIGBUS later). Its size is fixed at creation; the
#   writer unlinks it on close (or when collected, in the creating process only). Readers attach by name,
#   validate the header (magic, version, sizes, offsets) and never unlink. We use shm_open directly instead
#   of multiprocessing.shared_memory so that readers do not register with (and get unlinked by) Python's
#   resource tracker on 3.11.
#
#   offset 0          kv_header: magic "DYKVIDX1", version, capacity, max_workers, words per mask, offsets,
#                     then (own cache line) generation, active table, live/tombstone/dropped/compaction
#                     counters, then (own cache line) the shared round-robin counter
#   workers_offset    kv_worker[max_workers], 128 bytes each: seqlock, state, generation, block count, id
#   loads_offset      kv_load[max_workers], 64 bytes each: active requests, blocks, prefill tokens added by the
#                     routers, and running, waiting requests and KV blocks in use as the worker reported (i64)
#   table_offset[0]   kv_entry[capacity] ─┐ two table regions of capacity * (16 + 16 * words) bytes;
#   table_offset[1]   kv_entry[capacity] ─┘ `active` says which one readers use
#   (regions start on page boundaries; 64 workers: 32-byte entries, two per cache line)
#
#   kv_entry: u32 seq | u32 pred_ms | u64 key | u64 mask[words] | u64 pred[words]
#   mask = workers whose KV events confirmed the block; pred = workers a router sent the block to that have
#   not confirmed it yet, valid while now - pred_ms <= ttl. One timestamp per entry (the latest prediction
#   of any worker), in wrapping u32 milliseconds compared as signed differences: valid while predictions
#   live less than 24 days. Every process must pass times from the same clock (time.monotonic() is
#   system-wide on Linux).
#   store() sets the worker's mask bit and clears its pred bit; predict() sets its pred bit unless the mask
#   bit is set; remove() clears both; clear_worker()/free_slot() clear both everywhere. Readers map the
#   segment with MAP_POPULATE, so lookups never take page faults.
#
# Hash table
#   Open addressing with linear probing over `capacity` (a power of two >= capacity_blocks / 0.75) entries.
#   The key is the router's chained sequence hash (hash 0, which marks an empty entry, is stored as a fixed
#   alias). The home slot is murmur3's finalizer over key ^ a per-instance random secret, so crafted prompts
#   cannot pile their blocks onto one probe chain. An entry whose masks both become empty stays as a
#   tombstone (its key kept, so probe chains stay intact); inserts reuse the first tombstone of their probe
#   chain. Keys never move inside a table.
#   Memory is fixed: at most capacity_blocks live entries (more are refused and counted in dropped_inserts),
#   and when live + tombstones would pass 7/8 of the capacity the writer compacts: it rebuilds the live
#   entries into the other table region and flips `active`. Live entries are at most 3/4 of the capacity, so
#   every compaction leaves 1/8 free and costs O(capacity) once per >= capacity/8 inserts.
#
# Concurrency (GCC __atomic builtins; on x86 every fence below is a compiler barrier only)
#   Entry seqlock. Writer: seq += 1 (odd, relaxed); release fence; relaxed stores of key/bits/pred_ms;
#   seq += 1 (even, release). Reader: s1 = seq (acquire), wait while odd; relaxed loads; acquire fence;
#   s2 = seq; retry if s1 != s2. A reader never sees a torn entry, and only waits for a writer that is in the
#   middle of that very entry (a few ns); if that writer died mid-write the reader gives up after ~2000
#   yields and treats the entry as missing. A reader that meets key 0 stops (not found): an insert that
#   races with a lookup is simply not seen yet.
#   Table generation. A compaction does: generation += 1 (relaxed), release fence, rebuild the inactive
#   region, active = new (release), generation += 1 (release). A lookup reads generation (acquire) and
#   active (acquire) before its probes, and generation again after an acquire fence; if it changed, the
#   whole find_matches is redone. The inactive region is only rewritten during a later compaction, after a
#   generation bump that every lookup still reading it will notice. Probes are bounded by the capacity, so
#   even a stale region cannot loop a reader.
#   Worker slots use the same seqlock. Load counters and the round-robin counter are relaxed fetch-adds.
#
# find_matches(hashes)
#   Dynamo's prefix overlap: candidates = workers holding block 0; for each next block, candidates &= holders;
#   a worker that drops out at block i scores i; stop when no candidate is left; survivors score len(hashes).
#   The home entries of the next PREFETCH blocks are prefetched, so the cache misses of a long prompt against
#   a large table overlap instead of adding up, and the loop is compiled once per mask width (1-4 words).
#   Calls keep the GIL: releasing it for microseconds would let another thread hold it for a whole switch
#   interval.
#
# Predictions expire through a writer-local queue of (time, hashes) batches kept in predict order, so
# expire_predictions() touches only what it expires (timestamps passed to predict() must not go backwards).
# When the queue holds more keys than the table has entries it is dropped, and expiries sweep the whole
# table until everything it held has expired.

import atexit
import collections
import os
import re

from cpython cimport array
from libc.errno cimport EEXIST, errno
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDWR
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap, shm_open, shm_unlink
from posix.stat cimport fstat, struct_stat
from posix.unistd cimport close as c_close, ftruncate, getpid

from intbuf cimport IntArray, ints_acquire, ints_release

cdef extern from "fcntl.h" nogil:
    int posix_fallocate(int fd, long offset, long length)

cdef extern from "sys/mman.h" nogil:
    enum: MAP_POPULATE  # map every page up front: no page faults in lookups later

import array as _array_module

cdef array.array _U64_TEMPLATE = _array_module.array("Q")
cdef enum:
    PREFETCH = 16        # lookups ahead whose home entries are prefetched
cdef size_t PAGE = 4096
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
_unlink_at_exit = {}  # shm path -> pid of the writer that created it and has not unlinked it yet


@atexit.register
def _unlink_segments_at_exit():
    # A writer process that exits without close() (an exception, sys.exit) still removes its segments.
    # Only SIGKILL-like deaths leak one; remove_stale_segments() cleans those up.
    for path, pid in list(_unlink_at_exit.items()):
        if pid == getpid():
            shm_unlink(path)
    _unlink_at_exit.clear()
_DEFAULT_NAME_RE = re.compile(r"dyn-kvindex-([0-9]+)-[0-9a-f]{8}")


cdef inline size_t _round_page(size_t n) noexcept nogil:
    return (n + PAGE - 1) & ~(PAGE - 1)


cdef bytes _shm_path(str name):
    name = name.lstrip("/")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid shared memory name {name!r} (letters, digits, '.', '_', '-')")
    return ("/" + name).encode()


def remove_stale_segments(str directory="/dev/shm"):
    """Unlink index segments with a default name ("dyn-kvindex-<pid>-<random>") whose creating process is
    gone (a writer that was killed cannot unlink its own); returns their names. Segments of live processes,
    and any other name, are left alone. Only for a /dev/shm that no other PID namespace (container) uses:
    there a live writer's pid would look dead."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for entry in names:
        match = _DEFAULT_NAME_RE.fullmatch(entry)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # alive
        except PermissionError:
            continue  # alive, another user's
        except ProcessLookupError:
            pass
        try:
            os.unlink(os.path.join(directory, entry))
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


# == Lookups (any process) ================================================================================

cdef inline kv_entry* _entry(const KvView* v, char* table, uint64_t i) noexcept nogil:
    return <kv_entry*>(table + i * v.stride)


cdef inline kv_entry* _home(const KvView* v, char* table, uint64_t key) noexcept nogil:
    return _entry(v, table, kv_mix(kv_fix_key(key), v.secret) & v.mask)


cdef inline void _prefetch_home(const KvView* v, char* table, uint64_t key) noexcept nogil:
    # Only the home entry's line: also prefetching the next line (probe chains running into it) measured
    # twice as slow on a 1M-block table.
    kv_prefetch(_home(v, table, key))


cdef inline bint _read_entry(const KvView* v, char* table, uint64_t key, uint32_t now_ms, int64_t ttl_ms,
                             uint64_t* out, int W) noexcept nogil:
    """Holders of `key` (mask | fresh predictions) into out[W], read under the seqlock; False if absent.
    W == v.words, passed as a constant by _match so that the compiler unrolls the word loops."""
    cdef uint64_t pred[4]
    cdef uint64_t i, probes = 0, k
    cdef uint32_t s1, ts
    cdef int w, spins
    cdef kv_entry* e
    key = kv_fix_key(key)
    i = kv_mix(key, v.secret) & v.mask
    while probes < v.capacity:
        e = _entry(v, table, i)
        spins = 0
        while True:
            s1 = kv_ld32_acq(&e.seq)
            if s1 & 1:
                if kv_wait(&spins):
                    continue
                return False  # the writer died in the middle of this entry
            k = kv_ld64(&e.key)
            if k != key:
                break
            for w in range(W):
                out[w] = kv_ld64(&e.bits[w])
                pred[w] = kv_ld64(&e.bits[W + w])
            ts = kv_ld32(&e.pred_ms)
            kv_fence_acq()
            if kv_ld32(&e.seq) != s1:
                continue
            if ttl_ms >= 0 and kv_age(now_ms, ts) <= ttl_ms:
                for w in range(W):
                    out[w] |= pred[w]
            return True
        if k == 0:
            return False
        i = (i + 1) & v.mask
        probes += 1
    return False


cdef inline int _match_words(const KvView* v, const uint64_t* keys, Py_ssize_t n, uint32_t now_ms,
                             int64_t ttl_ms, uint16_t* out_slot, Py_ssize_t* out_count, int W) noexcept nogil:
    cdef uint64_t cand[4]
    cdef uint64_t held[4]
    cdef uint64_t g1, now, dropped, alive
    cdef char* table
    cdef Py_ssize_t i, depth
    cdef int w, nout
    while True:
        g1 = kv_ld64_acq(&v.hdr.generation)
        table = v.tables[kv_ld64_acq(&v.hdr.active) & 1]
        nout = 0
        depth = n  # what the candidates left at the end hold
        for w in range(W):
            cand[w] = 0
        for i in range(min(<Py_ssize_t>PREFETCH, n)):
            _prefetch_home(v, table, keys[i])
        for i in range(n):
            if i + PREFETCH < n:
                _prefetch_home(v, table, keys[i + PREFETCH])
            if not _read_entry(v, table, keys[i], now_ms, ttl_ms, held, W):
                depth = i
                break
            alive = 0
            for w in range(W):
                now = held[w] if i == 0 else cand[w] & held[w]
                dropped = cand[w] & ~now
                while dropped:
                    out_slot[nout] = <uint16_t>(w * 64 + kv_ctz(dropped))
                    out_count[nout] = i
                    nout += 1
                    dropped &= dropped - 1
                cand[w] = now
                alive |= now
            if not alive:
                break
        for w in range(W):
            dropped = cand[w]
            while dropped:
                out_slot[nout] = <uint16_t>(w * 64 + kv_ctz(dropped))
                out_count[nout] = depth
                nout += 1
                dropped &= dropped - 1
        kv_fence_acq()
        if kv_ld64(&v.hdr.generation) == g1:
            return nout


cdef int _match(const KvView* v, const uint64_t* keys, Py_ssize_t n, uint32_t now_ms, int64_t ttl_ms,
                uint16_t* out_slot, Py_ssize_t* out_count) noexcept nogil:
    """Prefix overlap of `keys` per worker into out_slot/out_count; returns how many workers matched."""
    if v.words == 1:  # one copy of the loop per mask width, each with its word loops unrolled
        return _match_words(v, keys, n, now_ms, ttl_ms, out_slot, out_count, 1)
    if v.words == 2:
        return _match_words(v, keys, n, now_ms, ttl_ms, out_slot, out_count, 2)
    if v.words == 3:
        return _match_words(v, keys, n, now_ms, ttl_ms, out_slot, out_count, 3)
    return _match_words(v, keys, n, now_ms, ttl_ms, out_slot, out_count, 4)


# == Table updates (the writer only) ======================================================================

cdef inline char* _active(const KvView* v) noexcept nogil:
    return v.tables[v.hdr.active & 1]


cdef inline bint _empty(const KvView* v, const kv_entry* e) noexcept nogil:
    cdef int w
    for w in range(2 * v.words):
        if e.bits[w]:
            return False
    return True


cdef inline void _write_begin(kv_entry* e) noexcept nogil:
    kv_st32(&e.seq, e.seq + 1)
    kv_fence_rel()


cdef inline void _write_end(kv_entry* e) noexcept nogil:
    kv_st32_rel(&e.seq, e.seq + 1)


cdef inline void _count(const KvView* v, int64_t live, int64_t tombstones) noexcept nogil:
    kv_st64(&v.hdr.live, v.hdr.live + live)
    kv_st64(&v.hdr.tombstones, v.hdr.tombstones + tombstones)


cdef inline void _count_dropped(const KvView* v) noexcept nogil:
    kv_st64(&v.hdr.dropped_inserts, v.hdr.dropped_inserts + 1)


cdef inline void _add_blocks(const KvView* v, int slot, int64_t delta) noexcept nogil:
    kv_sti64(&v.workers[slot].blocks, v.workers[slot].blocks + delta)


cdef Py_ssize_t _find(const KvView* v, uint64_t key, Py_ssize_t* free_at) noexcept nogil:
    """Index of `key` (fixed) in the active table, or -1 with free_at = its first tombstone or empty entry."""
    cdef char* table = _active(v)
    cdef uint64_t i = kv_mix(key, v.secret) & v.mask
    cdef uint64_t probes = 0
    cdef kv_entry* e
    free_at[0] = -1
    while probes < v.capacity:
        e = _entry(v, table, i)
        if e.key == key:
            return <Py_ssize_t>i
        if e.key == 0:
            if free_at[0] < 0:
                free_at[0] = <Py_ssize_t>i
            return -1
        if free_at[0] < 0 and _empty(v, e):
            free_at[0] = <Py_ssize_t>i
        i = (i + 1) & v.mask
        probes += 1
    return -1


cdef void _compact(const KvView* v) noexcept nogil:
    """Rebuild the live entries into the other table region and make it the active one."""
    cdef uint64_t old = v.hdr.active & 1
    cdef char* src = v.tables[old]
    cdef char* dst = v.tables[1 - old]
    cdef uint64_t gen = v.hdr.generation
    cdef uint64_t i, j
    cdef kv_entry* e
    kv_st64(&v.hdr.generation, gen + 1)
    kv_fence_rel()  # readers still in `dst` (from two flips ago) see the bump before any write below
    memset(dst, 0, v.capacity * v.stride)
    for i in range(v.capacity):
        e = _entry(v, src, i)
        if e.key == 0 or _empty(v, e):
            continue
        j = kv_mix(e.key, v.secret) & v.mask
        while _entry(v, dst, j).key != 0:
            j = (j + 1) & v.mask
        memcpy(&_entry(v, dst, j).pred_ms, &e.pred_ms, v.stride - 4)  # all but the seqlock (0, even)
    kv_st64_rel(&v.hdr.active, 1 - old)
    kv_st64_rel(&v.hdr.generation, gen + 2)
    kv_st64(&v.hdr.tombstones, 0)
    kv_st64(&v.hdr.compactions, v.hdr.compactions + 1)


cdef kv_entry* _entry_for_new_bit(const KvView* v, uint64_t key, int w, uint64_t bit, bint* was_empty) noexcept nogil:
    """The entry of `key` (fixed) to set `bit` of word `w` in: found, or claimed (a reused tombstone or an
    empty entry, compacting first when the table is too full). NULL when the worker already has the bit
    confirmed, or when a new live entry is refused because capacity_blocks entries are live."""
    cdef Py_ssize_t free_at
    cdef Py_ssize_t idx = _find(v, key, &free_at)
    cdef kv_entry* e
    if idx >= 0:
        e = _entry(v, _active(v), idx)
        if e.bits[w] & bit:
            return NULL
        was_empty[0] = _empty(v, e)
        if not was_empty[0]:
            return e
    else:
        was_empty[0] = True
    if v.hdr.live >= v.hdr.max_live:
        _count_dropped(v)
        return NULL
    if idx >= 0:
        return e  # a tombstone of this very key
    if _entry(v, _active(v), free_at).key == 0:  # a fresh entry: used grows
        if v.hdr.live + v.hdr.tombstones + 1 > v.hdr.max_used:
            _compact(v)
            _find(v, key, &free_at)
        _count(v, 0, 1)
    e = _entry(v, _active(v), free_at)
    _write_begin(e)
    kv_st64(&e.key, key)
    kv_st32(&e.pred_ms, 0)
    _write_end(e)
    return e


cdef void _store(const KvView* v, int slot, const uint64_t* keys, Py_ssize_t n) noexcept nogil:
    cdef int w = slot >> 6
    cdef uint64_t bit = (<uint64_t>1) << (slot & 63)
    cdef Py_ssize_t i
    cdef kv_entry* e
    cdef bint was_empty
    for i in range(min(<Py_ssize_t>PREFETCH, n)):
        _prefetch_home(v, _active(v), keys[i])
    for i in range(n):
        if i + PREFETCH < n:
            _prefetch_home(v, _active(v), keys[i + PREFETCH])
        e = _entry_for_new_bit(v, kv_fix_key(keys[i]), w, bit, &was_empty)
        if e == NULL:
            continue
        _write_begin(e)
        kv_st64(&e.bits[w], e.bits[w] | bit)
        kv_st64(&e.bits[v.words + w], e.bits[v.words + w] & ~bit)  # confirmed: no longer a prediction
        _write_end(e)
        if was_empty:
            _count(v, 1, -1)
        _add_blocks(v, slot, 1)


cdef void _predict(const KvView* v, int slot, const uint64_t* keys, Py_ssize_t n, uint32_t now_ms) noexcept nogil:
    cdef int w = slot >> 6
    cdef uint64_t bit = (<uint64_t>1) << (slot & 63)
    cdef Py_ssize_t i
    cdef kv_entry* e
    cdef bint was_empty
    for i in range(n):
        e = _entry_for_new_bit(v, kv_fix_key(keys[i]), w, bit, &was_empty)
        if e == NULL:
            continue
        _write_begin(e)
        kv_st64(&e.bits[v.words + w], e.bits[v.words + w] | bit)
        kv_st32(&e.pred_ms, now_ms)
        _write_end(e)
        if was_empty:
            _count(v, 1, -1)


cdef void _remove(const KvView* v, int slot, const uint64_t* keys, Py_ssize_t n) noexcept nogil:
    cdef int w = slot >> 6
    cdef uint64_t bit = (<uint64_t>1) << (slot & 63)
    cdef Py_ssize_t i, idx, free_at
    cdef kv_entry* e
    cdef uint64_t held
    for i in range(n):
        idx = _find(v, kv_fix_key(keys[i]), &free_at)
        if idx < 0:
            continue
        e = _entry(v, _active(v), idx)
        held = e.bits[w]
        if not ((held | e.bits[v.words + w]) & bit):
            continue
        _write_begin(e)
        kv_st64(&e.bits[w], held & ~bit)
        kv_st64(&e.bits[v.words + w], e.bits[v.words + w] & ~bit)
        _write_end(e)
        if held & bit:
            _add_blocks(v, slot, -1)
        if _empty(v, e):
            _count(v, -1, 1)


cdef void _sweep_slot(const KvView* v, int slot) noexcept nogil:
    """Clear a slot's bits (confirmed and predicted) in every entry."""
    cdef char* table = _active(v)
    cdef int w = slot >> 6
    cdef uint64_t bit = (<uint64_t>1) << (slot & 63)
    cdef uint64_t i
    cdef kv_entry* e
    for i in range(v.capacity):
        e = _entry(v, table, i)
        if e.key == 0 or not ((e.bits[w] | e.bits[v.words + w]) & bit):
            continue
        _write_begin(e)
        kv_st64(&e.bits[w], e.bits[w] & ~bit)
        kv_st64(&e.bits[v.words + w], e.bits[v.words + w] & ~bit)
        _write_end(e)
        if _empty(v, e):
            _count(v, -1, 1)
    kv_sti64(&v.workers[slot].blocks, 0)


cdef void _expire_entry(const KvView* v, kv_entry* e, uint32_t cut_ms) noexcept nogil:
    """Drop an entry's predictions if they were made before cut_ms."""
    cdef int w
    cdef uint64_t any_pred = 0
    for w in range(v.words):
        any_pred |= e.bits[v.words + w]
    if not any_pred or kv_age(e.pred_ms, cut_ms) >= 0:
        return
    _write_begin(e)
    for w in range(v.words):
        kv_st64(&e.bits[v.words + w], 0)
    _write_end(e)
    if _empty(v, e):
        _count(v, -1, 1)


# == Python classes ========================================================================================

cdef void* _map_existing(bytes path, size_t* size_out) except NULL:
    """Open and map an existing segment read-write (FileNotFoundError when there is none, ValueError when it is
    too small to be a KV index); the caller validates the header."""
    name = path.decode()[1:]
    cdef int fd = shm_open(path, O_RDWR, 0)
    cdef int err = 0
    if fd < 0:
        err = errno
        if err == 2:
            raise FileNotFoundError(err, f"no KV index shared memory named {name!r}")
        raise OSError(err, f"cannot open shared memory {name!r}: {os.strerror(err)}")
    cdef struct_stat st
    cdef void* base = MAP_FAILED
    cdef size_t size = 0
    if fstat(fd, &st) == 0 and <size_t>st.st_size >= sizeof(kv_header):
        size = st.st_size
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0)
    c_close(fd)
    if base == MAP_FAILED:
        raise ValueError(f"shared memory {name!r} is not a KV index (size {size})")
    size_out[0] = size
    return base


cdef class _KvIndex:
    """What writer and reader share: the mapping, lookups, worker ids and the shared load counters."""

    def __cinit__(self):
        self.base = NULL

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL

    cdef int _bind(self, char* base, size_t size) except -1:
        cdef kv_header* h = <kv_header*>base
        self.base = base
        self.size = size
        self.v.hdr = h
        self.v.capacity = h.capacity
        self.v.mask = h.capacity - 1
        self.v.secret = h.hash_secret
        self.v.words = h.words
        self.v.max_workers = h.max_workers
        self.v.stride = h.entry_bytes
        self.v.tables[0] = base + h.table_offset[0]
        self.v.tables[1] = base + h.table_offset[1]
        self.v.workers = <kv_worker*>(base + h.workers_offset)
        self.v.loads = <kv_load*>(base + h.loads_offset)
        return 0

    cdef int _unmap(self) except -1:
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL
        return 0

    cdef str _validate(self, kv_header* h, size_t size):
        if kv_ld64_acq(&h.magic) != KV_MAGIC:
            return "bad magic (not a KV index, or still being created)"
        if h.version != KV_VERSION:
            return f"layout version {h.version}, this build reads {KV_VERSION}"
        if h.header_bytes != sizeof(kv_header) or h.worker_bytes != sizeof(kv_worker):
            return "header or worker record size differs from this build"
        if h.total_bytes != size:
            return f"segment is {size} bytes, header says {h.total_bytes}"
        if h.capacity < 16 or h.capacity & (h.capacity - 1):
            return f"capacity {h.capacity} is not a power of two"
        if not 1 <= h.max_workers <= KV_MAX_WORKERS or h.words != (h.max_workers + 63) // 64:
            return f"max_workers {h.max_workers} / words {h.words} are inconsistent"
        if h.entry_bytes != 16 + 16 * h.words:
            return f"entry size {h.entry_bytes} does not match {h.words} mask words"
        table_bytes = h.capacity * h.entry_bytes
        if (h.workers_offset + h.max_workers * sizeof(kv_worker) > size
                or h.loads_offset + h.max_workers * sizeof(kv_load) > size
                or h.table_offset[0] + table_bytes > size or h.table_offset[1] + table_bytes > size):
            return "a region lies outside the segment"
        return None

    cdef int _check_open(self) except -1:
        if self.base == NULL:
            raise ValueError("the KV index is closed")
        return 0

    cdef int _check_slot(self, Py_ssize_t slot) except -1:
        self._check_open()
        if slot < 0 or slot >= self.v.max_workers:
            raise ValueError(f"slot {slot} is out of range (0..{self.v.max_workers - 1})")
        return 0

    def find_matches(self, seq_hashes, double now_s, double predicted_ttl_s):
        """{slot: number of leading blocks of `seq_hashes` the worker holds}; workers with 0 are omitted.

        A predicted (routed, unconfirmed) block counts while now_s - its prediction time <= predicted_ttl_s
        (never when predicted_ttl_s < 0). Keeps the GIL: releasing it for microseconds would let another
        thread take it for a whole switch interval.
        """
        self._check_open()
        cdef IntArray h
        cdef uint16_t slots[256]
        cdef Py_ssize_t counts[256]
        cdef int nout, j
        cdef uint32_t now_ms = kv_ms(now_s)
        cdef int64_t ttl_ms = <int64_t>(predicted_ttl_s * 1000.0) if predicted_ttl_s >= 0 else -1
        if ttl_ms > 0x7FFFFFFF:
            ttl_ms = 0x7FFFFFFF
        ints_acquire(seq_hashes, &h, 8, 1)
        nout = _match(&self.v, <const uint64_t*>h.data, h.n, now_ms, ttl_ms, slots, counts)
        ints_release(&h)
        return {slots[j]: counts[j] for j in range(nout)}

    # -- worker slots ---------------------------------------------------------------------------------------

    cdef tuple _read_worker(self, Py_ssize_t slot):
        """(state, generation, id bytes) of a slot, read under its seqlock."""
        cdef kv_worker* r = &self.v.workers[slot]
        cdef uint64_t ident[8]
        cdef uint32_t s1, state, length
        cdef uint64_t gen
        cdef int j, spins = 0
        while True:
            s1 = kv_ld32_acq(&r.seq)
            if s1 & 1:
                if not kv_wait(&spins):
                    raise RuntimeError(f"worker slot {slot} is stuck mid-update (writer died?)")
                continue
            state = kv_ld32(&r.state)
            length = kv_ld32(&r.id_len)
            gen = kv_ld64(&r.generation)
            for j in range(8):
                ident[j] = kv_ld64(&r.id[j])
            kv_fence_acq()
            if kv_ld32(&r.seq) == s1:
                break
        if length > KV_WORKER_ID_MAX:
            length = KV_WORKER_ID_MAX
        return state, gen, (<char*>ident)[:length]

    def worker_id(self, Py_ssize_t slot):
        """The worker id assigned to `slot`, or None when the slot is free."""
        self._check_slot(slot)
        state, _, ident = self._read_worker(slot)
        return ident.decode() if state else None

    def slot_generation(self, Py_ssize_t slot) -> int:
        """Bumped on every assign and free of `slot` (tells a reused slot from the one a request went to)."""
        self._check_slot(slot)
        return self._read_worker(slot)[1]

    def slots(self):
        """[(slot, worker id)] of the assigned slots, by slot."""
        self._check_open()
        out = []
        for slot in range(self.v.max_workers):
            state, _, ident = self._read_worker(slot)
            if state:
                out.append((slot, ident.decode()))
        return out

    # -- shared load ----------------------------------------------------------------------------------------

    def add_load(self, Py_ssize_t slot, int64_t requests, int64_t blocks, int64_t prefill_tokens):
        """Atomically add to a slot's active load (negative values subtract)."""
        self._check_slot(slot)
        cdef kv_load* l = &self.v.loads[slot]
        if requests:
            kv_addi64(&l.requests, requests)
        if blocks:
            kv_addi64(&l.blocks, blocks)
        if prefill_tokens:
            kv_addi64(&l.prefill_tokens, prefill_tokens)

    def load(self, Py_ssize_t slot):
        """(active requests, active blocks, active prefill tokens) of a slot."""
        self._check_slot(slot)
        cdef kv_load* l = &self.v.loads[slot]
        return kv_ldi64(&l.requests), kv_ldi64(&l.blocks), kv_ldi64(&l.prefill_tokens)

    def reported_load(self, Py_ssize_t slot):
        """(running requests, waiting requests, KV blocks in use) of a slot as its worker last reported them."""
        self._check_slot(slot)
        cdef kv_load* l = &self.v.loads[slot]
        return kv_ldi64(&l.reported_running), kv_ldi64(&l.reported_waiting), kv_ldi64(&l.reported_blocks)

    def next_round_robin(self, uint32_t key=0) -> int:
        """A counter shared by every process: 0, 1, 2, ... across all of them, one per ``key % 64``."""
        self._check_open()
        return kv_add64(&self.v.hdr.round_robin[key % KV_ROUND_ROBIN_COUNTERS], 1)

    # -- introspection --------------------------------------------------------------------------------------

    def stats(self):
        """Counters of the index (readable from any process)."""
        self._check_open()
        cdef kv_header* h = self.v.hdr
        slot_blocks = {}
        for slot in range(self.v.max_workers):
            if kv_ld32(&self.v.workers[slot].state):
                slot_blocks[slot] = kv_ldi64(&self.v.workers[slot].blocks)
        return {
            "capacity": h.capacity,
            "capacity_blocks": h.max_live,
            "max_workers": h.max_workers,
            "live_entries": kv_ld64(&h.live),
            "tombstones": kv_ld64(&h.tombstones),
            "dropped_inserts": kv_ld64(&h.dropped_inserts),
            "compactions": kv_ld64(&h.compactions),
            "generation": kv_ld64(&h.generation),
            "slot_blocks": slot_blocks,
            "segment_bytes": h.total_bytes,
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


cdef class KvIndexWriter(_KvIndex):
    """Creates the index segment and is the only process that changes blocks and worker slots."""

    def __cinit__(self):
        self._shm_name = None
        self._creator_pid = 0

    def __init__(self, name=None, Py_ssize_t capacity_blocks=1_000_000, int max_workers=64, bint adopt=False):
        """Create the segment ``name`` (a random name when None). With ``adopt``, a segment of that name left
        by a writer that died is taken over instead: same geometry required, its blocks dropped (this writer
        has not seen the events that stored them), its worker slots and the shared load counters kept, so
        that readers which mapped it keep working."""
        if not 1 <= max_workers <= KV_MAX_WORKERS:
            raise ValueError(f"max_workers must be in 1..{KV_MAX_WORKERS}, got {max_workers}")
        if not 1 <= capacity_blocks <= (1 << 32):
            raise ValueError(f"capacity_blocks must be in 1..2**32, got {capacity_blocks}")
        if name is None:
            name = f"dyn-kvindex-{os.getpid()}-{os.urandom(4).hex()}"
        path = _shm_path(name)
        cdef uint64_t capacity = 16
        while capacity * 3 < <uint64_t>capacity_blocks * 4:  # capacity >= capacity_blocks / 0.75
            capacity *= 2
        cdef uint32_t words = (max_workers + 63) // 64
        cdef size_t stride = 16 + 16 * words
        cdef size_t workers_offset = PAGE
        cdef size_t loads_offset = workers_offset + _round_page(max_workers * sizeof(kv_worker))
        cdef size_t table0 = loads_offset + _round_page(max_workers * sizeof(kv_load))
        cdef size_t table_bytes = _round_page(capacity * stride)
        cdef size_t total = table0 + 2 * table_bytes
        cdef struct_stat st
        cdef int err = 0
        cdef void* base = MAP_FAILED
        cdef int fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, 0o600)
        if fd < 0 and adopt and errno == EEXIST:
            self._adopt(path, capacity, max_workers)
            return
        if fd < 0:
            err = errno
            raise OSError(err, f"cannot create shared memory {path.decode()!r}: {os.strerror(err)}")
        try:
            if ftruncate(fd, total) != 0:
                err = errno
                raise OSError(err, f"cannot size shared memory to {total} bytes: {os.strerror(err)}")
            err = posix_fallocate(fd, 0, total)
            if err:
                raise OSError(err, f"cannot reserve {total} bytes of shared memory for the KV index "
                                   f"({os.strerror(err)}; is /dev/shm large enough?)")
            if fstat(fd, &st) != 0 or <size_t>st.st_size != total:
                raise OSError(errno, f"shared memory {path.decode()!r} has the wrong size")
            base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0)
            if base == MAP_FAILED:
                err = errno
                raise OSError(err, f"cannot map shared memory: {os.strerror(err)}")
        except BaseException:
            c_close(fd)
            shm_unlink(path)
            raise
        c_close(fd)
        cdef kv_header* h = <kv_header*>base
        h.version = KV_VERSION
        h.header_bytes = sizeof(kv_header)
        h.total_bytes = total
        h.capacity = capacity
        h.max_live = capacity_blocks
        h.max_used = capacity - capacity // 8
        h.hash_secret = int.from_bytes(os.urandom(8), "little")
        h.max_workers = max_workers
        h.words = words
        h.entry_bytes = stride
        h.worker_bytes = sizeof(kv_worker)
        h.table_offset[0] = table0
        h.table_offset[1] = table0 + table_bytes
        h.workers_offset = workers_offset
        h.loads_offset = loads_offset
        h.creator_pid = os.getpid()
        kv_st64_rel(&h.magic, KV_MAGIC)  # last: a reader that sees the magic sees the whole header
        self._bind(<char*>base, total)
        self.name = path.decode()[1:]
        self._shm_name = path
        self._creator_pid = getpid()
        _unlink_at_exit[path] = self._creator_pid
        self._slot_of = {}
        self._expiry = collections.deque()
        self._expiry_keys = 0
        self._sweep_needed = False
        self._have_pred_ms = False

    def __dealloc__(self):
        self._unlink()

    cdef int _adopt(self, bytes path, uint64_t capacity, uint32_t max_workers) except -1:
        cdef size_t size = 0
        cdef void* base = _map_existing(path, &size)
        cdef kv_header* h = <kv_header*>base
        problem = self._validate(h, size)
        if not problem and (h.capacity != capacity or h.max_workers != max_workers):
            problem = f"capacity {h.capacity} / max_workers {h.max_workers} differ from this writer's"
        if problem:
            munmap(base, size)
            raise ValueError(f"cannot adopt shared memory {path.decode()!r}: {problem}")
        self._bind(<char*>base, size)
        self.name = path.decode()[1:]
        self._shm_name = path
        self._creator_pid = getpid()
        _unlink_at_exit[path] = self._creator_pid
        self._expiry = collections.deque()
        self._expiry_keys = 0
        self._sweep_needed = False
        self._have_pred_ms = False
        self._slot_of = {}
        h.creator_pid = getpid()
        cdef int index
        for slot, worker_id in self.slots():
            self._slot_of[worker_id] = slot
            index = slot
            with nogil:
                _sweep_slot(&self.v, index)
        return 0

    cdef _unlink(self):
        if self._shm_name is not None and self._creator_pid == getpid():
            shm_unlink(self._shm_name)
            if _unlink_at_exit is not None:
                _unlink_at_exit.pop(self._shm_name, None)
        self._shm_name = None

    def close(self):
        """Unmap and unlink the segment (readers keep their mappings until they close)."""
        self._unmap()
        self._unlink()

    cdef int _check_assigned(self, Py_ssize_t slot) except -1:
        self._check_slot(slot)
        if not self.v.workers[slot].state:
            raise ValueError(f"slot {slot} is not assigned")
        return 0

    cdef int _write_worker(self, Py_ssize_t slot, uint32_t state, bytes worker_id) except -1:
        cdef kv_worker* r = &self.v.workers[slot]
        cdef uint64_t ident[8]
        cdef Py_ssize_t n = len(worker_id)
        cdef int j
        memset(ident, 0, sizeof(ident))
        memcpy(ident, <const char*>worker_id, n)
        kv_st32(&r.seq, r.seq + 1)
        kv_fence_rel()
        kv_st32(&r.state, state)
        kv_st32(&r.id_len, <uint32_t>n)
        kv_st64(&r.generation, r.generation + 1)
        for j in range(8):
            kv_st64(&r.id[j], ident[j])
        kv_sti64(&r.blocks, 0)
        kv_st32_rel(&r.seq, r.seq + 1)
        kv_sti64(&self.v.loads[slot].requests, 0)
        kv_sti64(&self.v.loads[slot].blocks, 0)
        kv_sti64(&self.v.loads[slot].prefill_tokens, 0)
        kv_sti64(&self.v.loads[slot].reported_running, 0)
        kv_sti64(&self.v.loads[slot].reported_waiting, 0)
        kv_sti64(&self.v.loads[slot].reported_blocks, 0)
        return 0

    # -- worker slots ---------------------------------------------------------------------------------------

    def assign_slot(self, str worker_id) -> int:
        """Slot of `worker_id`: its current one, else the lowest free slot (RuntimeError when none is)."""
        self._check_open()
        slot = self._slot_of.get(worker_id)
        if slot is not None:
            return slot
        encoded = worker_id.encode()
        if len(encoded) > KV_WORKER_ID_MAX:
            raise ValueError(f"worker id is {len(encoded)} bytes of UTF-8, more than {KV_WORKER_ID_MAX}")
        for slot in range(self.v.max_workers):
            if not self.v.workers[slot].state:
                self._write_worker(slot, 1, encoded)
                self._slot_of[worker_id] = slot
                return slot
        raise RuntimeError(f"no free worker slot (max_workers={self.v.max_workers})")

    def free_slot(self, Py_ssize_t slot):
        """Forget a slot's worker: clear its blocks and predictions, zero its load, free the slot.

        Load that processes add for the slot afterwards (requests still finishing) goes to the slot as is;
        compare slot_generation() to tell a reused slot apart."""
        self._check_slot(slot)
        if not self.v.workers[slot].state:
            return
        with nogil:
            _sweep_slot(&self.v, <int>slot)
        _, _, ident = self._read_worker(slot)
        self._slot_of.pop(ident.decode(), None)
        self._write_worker(slot, 0, b"")

    def report_load(self, Py_ssize_t slot, int64_t running, int64_t waiting, int64_t blocks):
        """Store the load a slot's worker reported of itself (see ``reported_load``)."""
        self._check_slot(slot)
        cdef kv_load* l = &self.v.loads[slot]
        kv_sti64(&l.reported_running, running)
        kv_sti64(&l.reported_waiting, waiting)
        kv_sti64(&l.reported_blocks, blocks)

    def clear_worker(self, Py_ssize_t slot):
        """Drop every block (and prediction) of a slot; O(capacity)."""
        self._check_assigned(slot)
        with nogil:
            _sweep_slot(&self.v, <int>slot)

    # -- blocks ---------------------------------------------------------------------------------------------

    def store(self, Py_ssize_t slot, seq_hashes):
        """The slot's worker holds these blocks (KV event BlockStored). Refused when full: dropped_inserts."""
        self._check_assigned(slot)
        cdef IntArray h
        ints_acquire(seq_hashes, &h, 8, 1)
        _store(&self.v, <int>slot, <const uint64_t*>h.data, h.n)
        ints_release(&h)

    def remove(self, Py_ssize_t slot, seq_hashes):
        """The slot's worker evicted these blocks (KV event BlockRemoved); clears its predictions of them too."""
        self._check_assigned(slot)
        cdef IntArray h
        ints_acquire(seq_hashes, &h, 8, 1)
        _remove(&self.v, <int>slot, <const uint64_t*>h.data, h.n)
        ints_release(&h)

    def predict(self, Py_ssize_t slot, seq_hashes, double now_s):
        """A router sent these blocks to the slot's worker: count them for it until confirmed or expired.

        Blocks the worker already holds are left alone. `now_s` should not go backwards between calls.
        """
        self._check_assigned(slot)
        cdef IntArray h
        cdef uint32_t now_ms = kv_ms(now_s)
        cdef array.array keys
        ints_acquire(seq_hashes, &h, 8, 1)
        _predict(&self.v, <int>slot, <const uint64_t*>h.data, h.n, now_ms)
        try:
            if h.n == 0:
                return
            keys = array.clone(_U64_TEMPLATE, h.n, False)
            memcpy(keys.data.as_voidptr, h.data, h.n * 8)
        finally:
            ints_release(&h)
        if self._have_pred_ms and kv_age(now_ms, self._last_pred_ms) < 0:
            now_ms = self._last_pred_ms  # keep the queue in order
        self._last_pred_ms = now_ms
        self._have_pred_ms = True
        self._expiry.append((now_ms, keys))
        self._expiry_keys += len(keys)
        if self._expiry_keys > <Py_ssize_t>self.v.capacity:
            # Too much to track one by one: sweep the table until everything queued so far is expired.
            self._expiry.clear()
            self._expiry_keys = 0
            self._sweep_needed = True
            self._sweep_until_ms = now_ms

    def expire_predictions(self, double older_than_s):
        """Forget predictions made before `older_than_s` (same clock as predict's now_s)."""
        self._check_open()
        cdef uint32_t cut_ms = kv_ms(older_than_s)
        cdef uint64_t i
        cdef Py_ssize_t j, nkeys, idx, free_at
        cdef array.array keys
        cdef uint64_t* k
        cdef const KvView* v = &self.v
        if self._sweep_needed:
            with nogil:
                for i in range(v.capacity):
                    if _entry(v, _active(v), i).key:
                        _expire_entry(v, _entry(v, _active(v), i), cut_ms)
            if kv_age(cut_ms, self._sweep_until_ms) > 0:
                self._sweep_needed = False
        while self._expiry and kv_age(<uint32_t>self._expiry[0][0], cut_ms) < 0:
            keys = self._expiry.popleft()[1]
            k = <uint64_t*>keys.data.as_voidptr
            nkeys = len(keys)
            self._expiry_keys -= nkeys
            for j in range(nkeys):
                idx = _find(v, kv_fix_key(k[j]), &free_at)
                if idx >= 0:
                    _expire_entry(v, _entry(v, _active(v), idx), cut_ms)


cdef class KvIndexReader(_KvIndex):
    """Attaches to a writer's segment by name: lookups, worker ids and the shared load counters."""

    def __init__(self, str name):
        path = _shm_path(name)
        cdef size_t size = 0
        cdef void* base = _map_existing(path, &size)
        self.base = <char*>base
        self.size = size
        problem = self._validate(<kv_header*>base, size)
        if problem:
            self._unmap()
            raise ValueError(f"shared memory {name!r} is not a usable KV index: {problem}")
        self._bind(<char*>base, size)
        self.name = path.decode()[1:]

    def close(self):
        """Unmap the segment (the writer owns and unlinks it)."""
        self._unmap()
