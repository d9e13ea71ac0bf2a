"""Channel between gateway processes and the KV indexer process.

Sockets:
    gateway PUSH  --[RoutedBlocks]-->  indexer PULL   ipc in the run directory
    indexer PUB   --[IndexerStatus]--> gateway SUB    ipc in the run directory (every second)

Framing: one MessagePack frame per message. Lookups do not use these sockets: gateways read the shared-memory
index directly. ``RoutedBlocks`` tells the indexer where a request was just sent, so that the next request
with the same prefix sees those blocks before the worker's KV events confirm them (or, with KV events off,
instead of them, until the TTL expires).
"""

from __future__ import annotations

import msgspec


class RoutedBlocks(msgspec.Struct, tag="routed", array_like=True, gc=False):
    """The router sent a request with these block hashes to this worker instance."""

    instance_id: str
    seq_hashes: bytes  # u64 sequence hashes as array('Q') bytes


class WorkerIndexStatus(msgspec.Struct, omit_defaults=True):
    """What the indexer knows about one worker's KV events."""

    slot: int
    blocks_mapped: int = 0
    events: int = 0
    gaps: int = 0
    orphaned_stores: int = 0
    block_size_mismatch: int | None = None
    kv_events: bool = True
    load: tuple[int, int, int] | None = None  # the worker's own report: running, waiting, KV blocks in use


class IndexerStatus(msgspec.Struct):
    """Published every second; ``problems`` are human-readable warnings shown in /health."""

    workers: dict[str, WorkerIndexStatus]
    problems: list[str]
    live_blocks: int = 0
    dropped_inserts: int = 0


routed_decoder = msgspec.msgpack.Decoder(RoutedBlocks)
status_decoder = msgspec.msgpack.Decoder(IndexerStatus)
encoder = msgspec.msgpack.Encoder()
