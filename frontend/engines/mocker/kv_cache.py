"""The mock engine's paged KV cache: fixed blocks, prefix caching by block hash, LRU eviction, KV events.

A block holds ``block_size`` tokens. Full blocks get an *engine* hash chained over the sequence (the
mock's own function, deliberately not the router's, so the frontend must map engine hashes to its own as it
does for vLLM): ``xxh3_64(parent_hash LE u64 || tokens LE u32, seed 0)``. A full block whose hash is known is
shared between requests (a prefix-cache hit). Blocks no request uses stay cached until evicted, least
recently used first. Every newly cached block is published as BlockStored (with its parent and tokens),
every eviction as BlockRemoved.
"""

from __future__ import annotations

import struct
from array import array
from collections import OrderedDict

import xxhash

from ...worker.kv_publisher import KvEventPublisher

_U64 = struct.Struct("<Q")


def engine_block_hash(parent: int | None, tokens: array) -> int:
    """The mock engine's hash of one full block given its parent's hash."""
    return _chained_hash(parent, tokens.tobytes())


def _chained_hash(parent: int | None, block: bytes) -> int:
    """``engine_block_hash`` of a block's token bytes."""
    prefix = _U64.pack(parent) if parent is not None else b""
    return xxhash.xxh3_64_intdigest(prefix + block, seed=0)


class CacheFull(Exception):
    """No free or evictable block is left."""


class SequenceBlocks:
    """The blocks one request holds and how many of them are hashed (full and published)."""

    __slots__ = ("block_ids", "hashes", "tokens", "prompt_hashes")

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = array("I", tokens)
        self.block_ids: list[int] = []
        self.hashes: list[int] = []
        self.prompt_hashes: list[int] = []  # of the prompt's full blocks, computed once at admission


class KvCache:
    """Block allocator with prefix caching; not thread-safe (the engine loop owns it)."""

    def __init__(self, num_blocks: int, block_size: int, publisher: KvEventPublisher | None = None) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.publisher = publisher
        self.refs = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.never_cached = list(range(num_blocks - 1, -1, -1))
        self.cached: dict[int, int] = {}  # engine hash -> block id
        self.evictable: OrderedDict[int, int] = OrderedDict()  # hash -> block id, refs == 0, LRU first

    # ---- queries -------------------------------------------------------------------------------------

    @property
    def free_blocks(self) -> int:
        return len(self.never_cached) + len(self.evictable)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks

    def prompt_hashes(self, tokens: array) -> list[int]:
        """The chained hashes of the full blocks of ``tokens`` (what ``engine_block_hash`` gives block by block)."""
        hashes, parent, size = [], None, self.block_size
        raw, step = tokens.tobytes(), size * tokens.itemsize  # sliced as bytes: no array slice per block
        for start in range(0, len(tokens) // size * step, step):
            parent = _chained_hash(parent, raw[start:start + step])
            hashes.append(parent)
        return hashes

    def cached_prefix(self, hashes: list[int]) -> int:
        count = 0
        for block_hash in hashes:
            if block_hash not in self.cached:
                break
            count += 1
        return count

    # ---- allocation ----------------------------------------------------------------------------------

    def admit(self, sequence: SequenceBlocks) -> int:
        """Take the cached prefix and blocks for the rest of the prompt; returns the cached tokens.

        Raises CacheFull (and holds nothing) when the prompt does not fit.
        """
        hashes = sequence.prompt_hashes = self.prompt_hashes(sequence.tokens)
        hits = self.cached_prefix(hashes)
        needed = -(-(len(sequence.tokens) + 1) // self.block_size) - hits
        if needed > self.free_blocks - sum(1 for h in hashes[:hits] if h in self.evictable):
            raise CacheFull
        for block_hash in hashes[:hits]:
            block_id = self.cached[block_hash]
            self._ref(block_id)
            sequence.block_ids.append(block_id)
            sequence.hashes.append(block_hash)
        for _ in range(needed):
            sequence.block_ids.append(self._take_block())
        return hits * self.block_size

    def append(self, sequence: SequenceBlocks, token: int) -> None:
        """Add a generated token, taking a new block when the last one is full; raises CacheFull."""
        if len(sequence.tokens) + 1 > len(sequence.block_ids) * self.block_size:
            sequence.block_ids.append(self._take_block())
        sequence.tokens.append(token)

    def commit(self, sequence: SequenceBlocks, computed_tokens: int) -> None:
        """Hash and publish every block that is now full and computed (prompt prefill or decode)."""
        size = self.block_size
        first_new = len(sequence.hashes)
        full = min(computed_tokens, len(sequence.tokens)) // size
        if full <= first_new:
            return
        parent = sequence.hashes[-1] if sequence.hashes else None
        known = sequence.prompt_hashes  # the prompt's blocks were hashed at admission
        stored_hashes, stored_tokens = [], array("I")
        for index in range(first_new, full):
            tokens = sequence.tokens[index * size:(index + 1) * size]
            block_hash = known[index] if index < len(known) else engine_block_hash(parent, tokens)
            block_id = sequence.block_ids[index]
            sequence.hashes.append(block_hash)
            if block_hash not in self.cached:
                self.cached[block_hash] = block_id
                self.block_hash[block_id] = block_hash
                stored_hashes.append(block_hash)
                stored_tokens.extend(tokens)
            parent = block_hash
        if stored_hashes and self.publisher is not None:
            stored_parent = sequence.hashes[first_new - 1] if first_new else None
            self.publisher.stored(stored_hashes, stored_parent, stored_tokens.tolist(), size)

    def release(self, sequence: SequenceBlocks) -> None:
        """Drop the request's references; hashed blocks stay cached (evictable), others become free."""
        for block_id in sequence.block_ids:
            self.refs[block_id] -= 1
            if self.refs[block_id] == 0:
                block_hash = self.block_hash[block_id]
                if block_hash is not None and self.cached.get(block_hash) == block_id:
                    self.evictable[block_hash] = block_id
                else:
                    self.block_hash[block_id] = None
                    self.never_cached.append(block_id)
        sequence.block_ids = []

    # ---- internals -----------------------------------------------------------------------------------

    def _ref(self, block_id: int) -> None:
        if self.refs[block_id] == 0:
            block_hash = self.block_hash[block_id]
            if block_hash is not None:
                self.evictable.pop(block_hash, None)
        self.refs[block_id] += 1

    def _take_block(self) -> int:
        if self.never_cached:
            block_id = self.never_cached.pop()
        elif self.evictable:
            block_hash, block_id = self.evictable.popitem(last=False)
            del self.cached[block_hash]
            self.block_hash[block_id] = None
            if self.publisher is not None:
                self.publisher.removed([block_hash])
        else:
            raise CacheFull
        self.refs[block_id] = 1
        return block_id
