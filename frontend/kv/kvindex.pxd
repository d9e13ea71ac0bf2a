# Declarations of native/kvindex.pyx (built as frontend.kv.kvindex): the shared-memory layout as C structs,
# the atomic primitives (GCC __atomic builtins) and the extension classes. The algorithm and the layout are
# explained at the top of native/kvindex.pyx.

from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <sched.h>

    #define KV_MAGIC 0x31584449564B5944ULL   /* "DYKVIDX1" read as a little-endian u64 */
    #define KV_VERSION 1u
    #define KV_MAX_WORKERS 256
    #define KV_ROUND_ROBIN_COUNTERS 64
    #define KV_MAX_WORDS 4
    #define KV_WORKER_ID_MAX 64
    #define KV_KEY_ZERO_ALIAS 0x9E3779B97F4A7C15ULL   /* key 0 marks an empty entry: hash 0 is stored as this */

    /* Page 0 of the segment. Fields up to `creator_pid` are written once by the creator before `magic`. */
    typedef struct {
        uint64_t magic;
        uint32_t version;
        uint32_t header_bytes;       /* sizeof(kv_header) */
        uint64_t total_bytes;        /* size of the whole segment */
        uint64_t capacity;           /* entries per table, a power of two */
        uint64_t max_live;           /* live entries beyond this are refused (capacity_blocks) */
        uint64_t max_used;           /* live + tombstones beyond this trigger a compaction */
        uint64_t hash_secret;        /* per-instance random: home slot = mix(key ^ secret) */
        uint32_t max_workers;
        uint32_t words;              /* u64 words per worker mask: ceil(max_workers / 64) */
        uint32_t entry_bytes;        /* 16 + 16 * words */
        uint32_t worker_bytes;       /* sizeof(kv_worker) */
        uint64_t table_offset[2];
        uint64_t workers_offset;
        uint64_t loads_offset;
        uint64_t creator_pid;
        /* Written by the writer only, read by everyone (relaxed unless noted). */
        _Alignas(64) uint64_t generation;   /* +1 when a compaction starts, +1 when it ends (release) */
        uint64_t active;                    /* table readers use: 0 or 1 (release) */
        uint64_t live;                      /* entries with a non-empty mask */
        uint64_t tombstones;                /* entries with a key and empty masks */
        uint64_t dropped_inserts;
        uint64_t compactions;
        /* Updated by every process with atomic adds. */
        _Alignas(64) uint64_t round_robin[KV_ROUND_ROBIN_COUNTERS];  /* one per key (e.g. per model) */
    } kv_header;

    /* One hash-table entry; stride = 16 + 16 * words bytes (32 bytes with up to 64 workers). */
    typedef struct {
        uint32_t seq;        /* seqlock: odd while the writer changes the entry */
        uint32_t pred_ms;    /* when predicted bits were last set: milliseconds, wrapping u32 */
        uint64_t key;        /* sequence hash; 0 = never used */
        uint64_t bits[];     /* mask[words] (confirmed by KV events), then pred[words] (routed, unconfirmed) */
    } kv_entry;

    /* One worker slot (128 bytes); the writer changes it under its seqlock. */
    typedef struct {
        uint32_t seq;
        uint32_t state;      /* 0 free, 1 assigned */
        uint32_t id_len;
        uint32_t pad0;
        uint64_t generation; /* +1 on every assign and free */
        int64_t blocks;      /* confirmed blocks the worker holds (kept by the writer) */
        uint64_t id[8];      /* worker id, id_len bytes of UTF-8 */
        uint64_t pad1[4];
    } kv_worker;

    /* Load of one worker slot, one cache line: what the routers added (atomic adds from any process) and what
       the worker last reported of itself (stored by the writer). */
    typedef struct {
        int64_t requests;
        int64_t blocks;
        int64_t prefill_tokens;
        int64_t reported_running;
        int64_t reported_waiting;
        int64_t reported_blocks;
        int64_t pad[2];
    } kv_load;

    _Static_assert(sizeof(kv_entry) == 16, "kv_entry header");
    _Static_assert(sizeof(kv_worker) == 128, "kv_worker size");
    _Static_assert(sizeof(kv_load) == 64, "kv_load size");

    static inline uint32_t kv_ld32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline uint32_t kv_ld32_acq(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint64_t kv_ld64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline uint64_t kv_ld64_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline int64_t kv_ldi64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void kv_st32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void kv_st32_rel(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void kv_st64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void kv_st64_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void kv_sti64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline int64_t kv_addi64(int64_t *p, int64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline uint64_t kv_add64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline void kv_fence_acq(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void kv_fence_rel(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static inline void kv_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
    static inline int kv_ctz(uint64_t x) { return __builtin_ctzll(x); }

    static inline void kv_cpu_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }

    /* Wait a little for a writer in the middle of an entry; 0 = give up (the writer died mid-write). */
    static inline int kv_wait(int *spins) {
        int n = ++*spins;
        if (n < 1024) { kv_cpu_relax(); return 1; }
        if (n < 1024 + 2000) { sched_yield(); return 1; }
        return 0;
    }

    static inline uint64_t kv_fix_key(uint64_t h) { return h ? h : KV_KEY_ZERO_ALIAS; }

    /* Home slot: murmur3's finalizer over key ^ per-instance secret (clients choose the tokens, so the low
       bits of the raw hash must not decide where a key lives). */
    static inline uint64_t kv_mix(uint64_t key, uint64_t secret) {
        uint64_t h = key ^ secret;
        h ^= h >> 33; h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 33;
        return h;
    }

    /* Seconds to wrapping milliseconds; ages are (int32_t)(a - b), valid within +-24 days. */
    static inline uint32_t kv_ms(double t) { return (uint32_t)(uint64_t)(int64_t)(t * 1000.0); }
    static inline int32_t kv_age(uint32_t now, uint32_t then) { return (int32_t)(now - then); }
    """
    const uint64_t KV_MAGIC
    const uint32_t KV_VERSION
    const int KV_MAX_WORKERS
    const int KV_ROUND_ROBIN_COUNTERS
    const int KV_MAX_WORDS
    const int KV_WORKER_ID_MAX

    ctypedef struct kv_header:
        uint64_t magic
        uint32_t version
        uint32_t header_bytes
        uint64_t total_bytes
        uint64_t capacity
        uint64_t max_live
        uint64_t max_used
        uint64_t hash_secret
        uint32_t max_workers
        uint32_t words
        uint32_t entry_bytes
        uint32_t worker_bytes
        uint64_t table_offset[2]
        uint64_t workers_offset
        uint64_t loads_offset
        uint64_t creator_pid
        uint64_t generation
        uint64_t active
        uint64_t live
        uint64_t tombstones
        uint64_t dropped_inserts
        uint64_t compactions
        uint64_t round_robin[64]

    ctypedef struct kv_entry:
        uint32_t seq
        uint32_t pred_ms
        uint64_t key
        uint64_t bits[1]

    ctypedef struct kv_worker:
        uint32_t seq
        uint32_t state
        uint32_t id_len
        uint64_t generation
        int64_t blocks
        uint64_t id[8]

    ctypedef struct kv_load:
        int64_t requests
        int64_t blocks
        int64_t prefill_tokens
        int64_t reported_running
        int64_t reported_waiting
        int64_t reported_blocks

    uint32_t kv_ld32(const uint32_t* p) noexcept nogil
    uint32_t kv_ld32_acq(const uint32_t* p) noexcept nogil
    uint64_t kv_ld64(const uint64_t* p) noexcept nogil
    uint64_t kv_ld64_acq(const uint64_t* p) noexcept nogil
    int64_t kv_ldi64(const int64_t* p) noexcept nogil
    void kv_st32(uint32_t* p, uint32_t v) noexcept nogil
    void kv_st32_rel(uint32_t* p, uint32_t v) noexcept nogil
    void kv_st64(uint64_t* p, uint64_t v) noexcept nogil
    void kv_st64_rel(uint64_t* p, uint64_t v) noexcept nogil
    void kv_sti64(int64_t* p, int64_t v) noexcept nogil
    int64_t kv_addi64(int64_t* p, int64_t v) noexcept nogil
    uint64_t kv_add64(uint64_t* p, uint64_t v) noexcept nogil
    void kv_fence_acq() noexcept nogil
    void kv_fence_rel() noexcept nogil
    void kv_prefetch(const void* p) noexcept nogil
    int kv_ctz(uint64_t x) noexcept nogil
    bint kv_wait(int* spins) noexcept nogil
    uint64_t kv_fix_key(uint64_t h) noexcept nogil
    uint64_t kv_mix(uint64_t key, uint64_t secret) noexcept nogil
    uint32_t kv_ms(double t) noexcept nogil
    int32_t kv_age(uint32_t now, uint32_t then) noexcept nogil


cdef struct KvView:
    # Where everything is in a mapped segment, and the table geometry (copied from the header).
    kv_header* hdr
    char* tables[2]
    kv_worker* workers
    kv_load* loads
    uint64_t capacity
    uint64_t mask            # capacity - 1
    uint64_t secret
    size_t stride            # bytes per entry
    int words
    int max_workers


cdef class _KvIndex:
    cdef char* base              # the mapped segment (NULL once closed)
    cdef size_t size
    cdef KvView v
    cdef readonly str name

    cdef int _bind(self, char* base, size_t size) except -1
    cdef int _unmap(self) except -1
    cdef int _check_open(self) except -1
    cdef int _check_slot(self, Py_ssize_t slot) except -1
    cdef tuple _read_worker(self, Py_ssize_t slot)
    cdef str _validate(self, kv_header* h, size_t size)


cdef class KvIndexWriter(_KvIndex):
    cdef bytes _shm_name
    cdef long _creator_pid
    cdef dict _slot_of           # worker id -> slot
    cdef object _expiry          # deque of (order_ms, array('Q') of keys) in predict order
    cdef Py_ssize_t _expiry_keys
    cdef bint _sweep_needed      # the expiry queue overflowed: expiries sweep the table ...
    cdef uint32_t _sweep_until_ms  # ... until they pass this time
    cdef uint32_t _last_pred_ms
    cdef bint _have_pred_ms

    cdef _unlink(self)
    cdef int _adopt(self, bytes path, uint64_t capacity, uint32_t max_workers) except -1
    cdef int _check_assigned(self, Py_ssize_t slot) except -1
    cdef int _write_worker(self, Py_ssize_t slot, uint32_t state, bytes worker_id) except -1


cdef class KvIndexReader(_KvIndex):
    pass
