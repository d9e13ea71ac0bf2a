"""Applying one worker's KV events to the shared block index.

The index is keyed by the router's own chained sequence hashes (the ones the tokenizer pool computes for
requests). Engines publish their own hashes, so for every stored block the router recomputes its hash from
the event's token ids, chained onto the parent's router hash, and remembers ``engine hash -> router hash``
for later parents and removals.

Sequence numbers: batches must arrive with seq = last + 1. A restart of the engine (seq back to 0) means its
cache is gone. A gap means events were lost: the worker's blocks are replayed from the engine when it has a
replay endpoint, else dropped (they come back as the engine stores blocks again).
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

from ..protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

log = logging.getLogger(__name__)

LocalHashes = Callable[[list[int], int], list[int]]
Chain = Callable[[int | None, list[int]], list[int]]


class IndexWriter(Protocol):
    """The part of the KV index writer this module uses."""

    def store(self, slot: int, seq_hashes: list[int]) -> None: ...

    def remove(self, slot: int, seq_hashes: list[int]) -> None: ...

    def clear_worker(self, slot: int) -> None: ...


class WorkerKvState:
    """Per-worker event bookkeeping: the engine-to-router hash map, sequence numbers, problem counters."""

    def __init__(self, instance_id: str, slot: int, block_size: int, index: IndexWriter,
                 local_hashes: LocalHashes, chain: Chain) -> None:
        self.instance_id = instance_id
        self.slot = slot
        self.block_size = block_size
        self.index = index
        self._local_hashes = local_hashes
        self._chain = chain
        self.engine_to_router: dict[int, int] = {}
        self.last_seq: int | None = None
        self.events_applied = 0
        self.gaps = 0
        self.orphans = 0
        self.mismatched_block_size: int | None = None

    # ---- sequence numbers ----------------------------------------------------------------------------

    def check_seq(self, seq: int) -> str:
        """Classify a batch: "next", "duplicate", "restart" (engine started over) or "gap"."""
        last = self.last_seq
        if last is None or seq == last + 1:
            return "next"
        if seq <= last:
            return "restart" if seq == 0 else "duplicate"
        return "gap"

    def apply_batch(self, seq: int, events: list[KvEvent]) -> None:
        """Apply a batch known to be in order."""
        self.last_seq = seq
        for event in events:
            self.apply(event)

    def drop_all(self) -> None:
        """Forget every block of this worker (restart, unrecoverable gap, or the worker left)."""
        self.index.clear_worker(self.slot)
        self.engine_to_router.clear()

    # ---- events --------------------------------------------------------------------------------------

    def apply(self, event: KvEvent) -> None:
        if isinstance(event, BlockStored):
            self._stored(event)
        elif isinstance(event, BlockRemoved):
            self._removed(event)
        elif isinstance(event, AllBlocksCleared):
            self.drop_all()
        self.events_applied += 1

    def _stored(self, event: BlockStored) -> None:
        if event.block_size != self.block_size:
            if self.mismatched_block_size != event.block_size:
                log.error("KV event block size differs from the model card; events of this worker are ignored",
                          extra={"instance": self.instance_id, "event_block_size": event.block_size,
                                 "card_block_size": self.block_size})
            self.mismatched_block_size = event.block_size
            return
        local = self._local_hashes(event.token_ids, self.block_size)
        if len(local) != len(event.block_hashes):
            self.orphans += 1
            return
        parent = None
        if event.parent is not None:
            parent = self.engine_to_router.get(event.parent)
            if parent is None:  # the chain's start is unknown: these blocks cannot be placed
                self.orphans += 1
                return
        router_hashes = self._chain(parent, local)
        self.index.store(self.slot, router_hashes)
        mapping = self.engine_to_router
        for engine_hash, router_hash in zip(event.block_hashes, router_hashes):
            mapping[engine_hash] = router_hash

    def _removed(self, event: BlockRemoved) -> None:
        mapping = self.engine_to_router
        router_hashes = [mapping.pop(h) for h in event.block_hashes if h in mapping]
        if router_hashes:
            self.index.remove(self.slot, router_hashes)

    def status(self) -> dict:
        return {"slot": self.slot, "blocks_mapped": len(self.engine_to_router), "events": self.events_applied,
                "gaps": self.gaps, "orphaned_stores": self.orphans,
                "block_size_mismatch": self.mismatched_block_size}
