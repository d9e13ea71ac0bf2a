# C-level declarations of blockhash.pyx: the vendored xxHash (compiled in with XXH_INLINE_ALL, see setup.py)
# and Dynamo's block-hash primitives.

from libc.stdint cimport uint32_t, uint64_t

cdef extern from "xxhash.h" nogil:
    ctypedef uint64_t XXH64_hash_t
    XXH64_hash_t XXH3_64bits_withSeed(const void* data, size_t length, XXH64_hash_t seed)

cdef extern from *:
    """
    #define KVB_SEED 1337ULL  /* Dynamo's XXH3_SEED */

    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define kvb_le64(x) __builtin_bswap64(x)
    #else
    #define kvb_le64(x) (x)
    #endif

    /* Sequence hash of a block: XXH3-64(LE u64 parent || LE u64 local, seed 1337). */
    static inline uint64_t kvb_seq_hash(uint64_t parent, uint64_t local) {
        uint64_t buf[2] = { kvb_le64(parent), kvb_le64(local) };
        return XXH3_64bits_withSeed(buf, sizeof buf, KVB_SEED);
    }

    /* Local hash of each of `nblocks` blocks of `block_size` little-endian u32 tokens. */
    static void kvb_local_hashes(const uint32_t *tokens_le, Py_ssize_t nblocks, Py_ssize_t block_size,
                                 uint64_t *out) {
        const size_t len = (size_t)block_size * sizeof(uint32_t);
        const unsigned char *p = (const unsigned char *)tokens_le;
        for (Py_ssize_t i = 0; i < nblocks; i++, p += len) out[i] = XXH3_64bits_withSeed(p, len, KVB_SEED);
    }

    /* Chain local hashes into sequence hashes, after `parent` when has_parent (in place is fine). */
    static void kvb_chain(int has_parent, uint64_t parent, const uint64_t *local, Py_ssize_t n,
                          uint64_t *out) {
        Py_ssize_t i = 0;
        if (n == 0) return;
        if (!has_parent) { out[0] = local[0]; parent = out[0]; i = 1; }
        for (; i < n; i++) { parent = kvb_seq_hash(parent, local[i]); out[i] = parent; }
    }
    """
    const uint64_t KVB_SEED
    uint64_t kvb_seq_hash(uint64_t parent, uint64_t local) noexcept nogil
    void kvb_local_hashes(const uint32_t* tokens_le, Py_ssize_t nblocks, Py_ssize_t block_size,
                          uint64_t* out) noexcept nogil
    void kvb_chain(bint has_parent, uint64_t parent, const uint64_t* local, Py_ssize_t n,
                   uint64_t* out) noexcept nogil
