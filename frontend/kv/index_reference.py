"""Pure-Python twins of the native KV code, for differential tests and as readable specifications.

- ``local_block_hashes`` / ``block_hashes`` / ``chain``: native/blockhash.pyx, with the ``xxhash`` package.
- ``ReferenceKvIndex``: native/kvindex.pyx (``KvIndexWriter`` and ``KvIndexReader`` in one object), a dict of
  sequence hash -> [confirmed mask, predicted mask, prediction time]. No shared memory, no tombstones, no
  compaction: only the semantics, which the native index must match operation for operation.
"""

from __future__ import annotations

import itertools
import struct
from array import array

import xxhash

XXH3_SEED = 1337
_ZERO_ALIAS = 0x9E3779B97F4A7C15  # hash 0 marks an empty entry natively and is stored as this
_WORKER_ID_MAX = 64


def local_block_hashes(tokens: list[int], block_size: int) -> list[int]:
    """XXH3-64 (seed 1337) of each full block's tokens as little-endian u32 bytes."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    full = len(tokens) // block_size * block_size
    return [
        xxhash.xxh3_64_intdigest(struct.pack(f"<{block_size}I", *tokens[i : i + block_size]), seed=XXH3_SEED)
        for i in range(0, full, block_size)
    ]


def sequence_hash(parent_seq_hash: int, local_hash: int) -> int:
    return xxhash.xxh3_64_intdigest(struct.pack("<QQ", parent_seq_hash, local_hash), seed=XXH3_SEED)


def chain(parent_seq_hash: int | None, local_hashes: list[int]) -> list[int]:
    """Sequence hashes: seq[0] = local[0] (or hash(parent, local[0])), seq[i] = hash(seq[i-1], local[i])."""
    out: list[int] = []
    parent = parent_seq_hash
    for local in local_hashes:
        parent = local if parent is None else sequence_hash(parent, local)
        out.append(parent)
    return out


def block_hashes(tokens: list[int], block_size: int) -> list[int]:
    return chain(None, local_block_hashes(tokens, block_size))


def _ms(t: float) -> int:
    """Seconds to wrapping u32 milliseconds, as the native code does."""
    return int(t * 1000.0) & 0xFFFFFFFF


def _age(now_ms: int, then_ms: int) -> int:
    """(int32_t)(now - then)."""
    return ((now_ms - then_ms + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _hash_sequence(seq_hashes):
    """Hashes as ints: raw bytes are read as native u64s, as the native index reads any buffer."""
    if isinstance(seq_hashes, (bytes, bytearray, memoryview)):
        return array("Q", bytes(seq_hashes))
    return seq_hashes


class ReferenceKvIndex:
    """Same API and semantics as KvIndexWriter + KvIndexReader, in one process."""

    def __init__(self, name: str | None = None, capacity_blocks: int = 1_000_000, max_workers: int = 64) -> None:
        if not 1 <= max_workers <= 256:
            raise ValueError(f"max_workers must be in 1..256, got {max_workers}")
        self.name = name or "reference"
        self.capacity_blocks = capacity_blocks
        self.max_workers = max_workers
        self._entries: dict[int, list[int]] = {}  # key -> [mask, pred, pred_ms]
        self._ids: list[str | None] = [None] * max_workers
        self._generations = [0] * max_workers
        self._blocks = [0] * max_workers
        self._loads = [[0, 0, 0] for _ in range(max_workers)]
        self._reported = [(0, 0, 0)] * max_workers
        self._round_robin = [itertools.count() for _ in range(64)]
        self._dropped = 0

    # -- slots --------------------------------------------------------------------------------------------------

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.max_workers:
            raise ValueError(f"slot {slot} is out of range (0..{self.max_workers - 1})")

    def _check_assigned(self, slot: int) -> None:
        self._check_slot(slot)
        if self._ids[slot] is None:
            raise ValueError(f"slot {slot} is not assigned")

    def assign_slot(self, worker_id: str) -> int:
        if worker_id in self._ids:
            return self._ids.index(worker_id)
        if len(worker_id.encode()) > _WORKER_ID_MAX:
            raise ValueError(f"worker id is more than {_WORKER_ID_MAX} bytes of UTF-8")
        for slot, ident in enumerate(self._ids):
            if ident is None:
                self._ids[slot] = worker_id
                self._generations[slot] += 1
                self._blocks[slot] = 0
                self._loads[slot] = [0, 0, 0]
                self._reported[slot] = (0, 0, 0)
                return slot
        raise RuntimeError(f"no free worker slot (max_workers={self.max_workers})")

    def free_slot(self, slot: int) -> None:
        self._check_slot(slot)
        if self._ids[slot] is None:
            return
        self.clear_worker(slot)
        self._ids[slot] = None
        self._generations[slot] += 1
        self._loads[slot] = [0, 0, 0]
        self._reported[slot] = (0, 0, 0)

    def worker_id(self, slot: int) -> str | None:
        self._check_slot(slot)
        return self._ids[slot]

    def slot_generation(self, slot: int) -> int:
        self._check_slot(slot)
        return self._generations[slot]

    def slots(self) -> list[tuple[int, str]]:
        return [(slot, ident) for slot, ident in enumerate(self._ids) if ident is not None]

    # -- blocks -------------------------------------------------------------------------------------------------

    def _live(self) -> int:
        return len(self._entries)

    def _entry_for_new_bit(self, key: int) -> list[int] | None:
        """The entry a bit is about to be set in, or None when a new live entry is refused (full)."""
        entry = self._entries.get(key)
        if entry is None:
            if self._live() >= self.capacity_blocks:
                self._dropped += 1
                return None
            entry = self._entries[key] = [0, 0, 0]
        return entry

    def _drop_if_empty(self, key: int, entry: list[int]) -> None:
        if not entry[0] and not entry[1]:
            del self._entries[key]

    def _unconfirmed_entries(self, bit: int, seq_hashes):
        """The entries of ``seq_hashes`` whose confirmed mask lacks ``bit`` (created if there is room)."""
        for h in seq_hashes:
            key = h or _ZERO_ALIAS
            held = self._entries.get(key)
            if held is not None and held[0] & bit:
                continue
            entry = self._entry_for_new_bit(key)
            if entry is not None:
                yield entry

    def store(self, slot: int, seq_hashes) -> None:
        self._check_assigned(slot)
        seq_hashes = _hash_sequence(seq_hashes)
        bit = 1 << slot
        for entry in self._unconfirmed_entries(bit, seq_hashes):
            entry[0] |= bit
            entry[1] &= ~bit
            self._blocks[slot] += 1

    def remove(self, slot: int, seq_hashes) -> None:
        self._check_assigned(slot)
        seq_hashes = _hash_sequence(seq_hashes)
        bit = 1 << slot
        for h in seq_hashes:
            key = h or _ZERO_ALIAS
            entry = self._entries.get(key)
            if entry is None or not (entry[0] | entry[1]) & bit:
                continue
            if entry[0] & bit:
                self._blocks[slot] -= 1
            entry[0] &= ~bit
            entry[1] &= ~bit
            self._drop_if_empty(key, entry)

    def clear_worker(self, slot: int) -> None:
        self._check_assigned(slot)
        bit = 1 << slot
        for key, entry in list(self._entries.items()):
            entry[0] &= ~bit
            entry[1] &= ~bit
            self._drop_if_empty(key, entry)
        self._blocks[slot] = 0

    def predict(self, slot: int, seq_hashes, now_s: float) -> None:
        self._check_assigned(slot)
        seq_hashes = _hash_sequence(seq_hashes)
        bit = 1 << slot
        now_ms = _ms(now_s)
        for entry in self._unconfirmed_entries(bit, seq_hashes):
            entry[1] |= bit
            entry[2] = now_ms

    def expire_predictions(self, older_than_s: float) -> None:
        cut_ms = _ms(older_than_s)
        for key, entry in list(self._entries.items()):
            if entry[1] and _age(entry[2], cut_ms) < 0:
                entry[1] = 0
                self._drop_if_empty(key, entry)

    def find_matches(self, seq_hashes, now_s: float, predicted_ttl_s: float) -> dict[int, int]:
        seq_hashes = _hash_sequence(seq_hashes)
        now_ms = _ms(now_s)
        ttl_ms = min(int(predicted_ttl_s * 1000.0), 0x7FFFFFFF) if predicted_ttl_s >= 0 else -1
        scores: dict[int, int] = {}
        candidates = -1  # every worker
        depth = 0
        for h in seq_hashes:
            entry = self._entries.get(h or _ZERO_ALIAS)
            if entry is None:
                break
            holders = entry[0]
            if ttl_ms >= 0 and _age(now_ms, entry[2]) <= ttl_ms:
                holders |= entry[1]
            survivors = candidates & holders
            if depth:
                for slot in _bits(candidates & ~survivors):
                    scores[slot] = depth
            candidates = survivors
            depth += 1
            if not candidates:
                break
        if depth and candidates:
            for slot in _bits(candidates):
                scores[slot] = depth
        return scores

    # -- load ---------------------------------------------------------------------------------------------------

    def add_load(self, slot: int, requests: int, blocks: int, prefill_tokens: int) -> None:
        self._check_slot(slot)
        load = self._loads[slot]
        load[0] += requests
        load[1] += blocks
        load[2] += prefill_tokens

    def load(self, slot: int) -> tuple[int, int, int]:
        self._check_slot(slot)
        return tuple(self._loads[slot])  # type: ignore[return-value]

    def report_load(self, slot: int, running: int, waiting: int, blocks: int) -> None:
        self._check_slot(slot)
        self._reported[slot] = (running, waiting, blocks)

    def reported_load(self, slot: int) -> tuple[int, int, int]:
        self._check_slot(slot)
        return self._reported[slot]

    def next_round_robin(self, key: int = 0) -> int:
        return next(self._round_robin[key % 64])

    def stats(self) -> dict:
        return {
            "capacity_blocks": self.capacity_blocks,
            "max_workers": self.max_workers,
            "live_entries": self._live(),
            "dropped_inserts": self._dropped,
            "slot_blocks": {slot: self._blocks[slot] for slot, _ in self.slots()},
        }

    def close(self) -> None:
        self._entries.clear()


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
