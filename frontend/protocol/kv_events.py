"""KV-cache events in vLLM's ZeroMQ wire format, both encodings, both directions.

Framing on the engine's PUB socket (vLLM ``vllm/distributed/kv_events.py``, copied by SGLang)::

    frame 0  topic (bytes, may be empty)
    frame 1  sequence number, 8 bytes big-endian unsigned, +1 per batch, restarts at 0 with the engine
    frame 2  MessagePack EventBatch

EventBatch is ``[ts, [event, ...], data_parallel_rank]`` (array encoding) or
``{"ts", "events", "data_parallel_rank"}`` (map encoding). An event is either an array tagged by its first
element (``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
lora_name, extra_keys, group_idx, kv_cache_spec_kind, kv_cache_spec_sliding_window]``, trailing defaults
omitted) or a map with a ``"type"`` key and named fields (vLLM >= mid-2026). Hashes are ints (possibly
negative i64, or u64 above 2^63) or bytes (a full digest: its last 8 bytes read big-endian are the u64).

Replay (optional ROUTER on the engine): a DEALER sends ``[b"", start_seq(8B BE)]`` and receives
``[b"", seq(8B BE), payload]`` for every buffered batch with ``seq >= start_seq``, then ``[b"", 0xFF*8, b""]``.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

U64_MASK = (1 << 64) - 1
END_OF_REPLAY = b"\xff" * 8
_SEQ = struct.Struct(">Q")

MAIN_ATTENTION_KINDS = (None, "full_attention", "mla_attention", "sink_full_attention")

# Positional field order of the array encoding (after the tag).
_STORED_FIELDS = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
                  "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window")
_REMOVED_FIELDS = ("block_hashes", "medium", "group_idx")


class BlockStored(msgspec.Struct, frozen=True):
    """Blocks newly cached by the engine, in order; ``parent`` links the first one to an earlier block."""

    block_hashes: list[int]
    parent: int | None
    token_ids: list[int]
    block_size: int


class BlockRemoved(msgspec.Struct, frozen=True):
    """Blocks the engine evicted (hashes only; the router maps them to its own)."""

    block_hashes: list[int]


class AllBlocksCleared(msgspec.Struct, frozen=True):
    """The engine dropped its whole cache."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


class EventDecodeError(ValueError):
    """A payload that is not an EventBatch in either encoding."""


def encode_seq(seq: int) -> bytes:
    return _SEQ.pack(seq)


def decode_seq(frame: bytes) -> int:
    if len(frame) != 8:
        raise EventDecodeError(f"sequence frame of {len(frame)} bytes, expected 8")
    return _SEQ.unpack(frame)[0]


def normalize_hash(value: Any) -> int:
    """An engine block hash as u64: ints wrap to 64 bits, bytes give their last 8 bytes big-endian."""
    if isinstance(value, bool):
        raise EventDecodeError("a block hash cannot be a bool")
    if isinstance(value, int):
        return value & U64_MASK
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(bytes(value[-8:]), "big")
    raise EventDecodeError(f"block hash of type {type(value).__name__}")


def decode_batch(payload: bytes) -> list[KvEvent]:
    """Events of one batch that concern the main attention group on the GPU, in order."""
    try:
        batch = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"not MessagePack: {exc}") from None
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        raw_events = batch[1]
    elif isinstance(batch, dict):
        raw_events = batch.get("events")
    else:
        raise EventDecodeError("EventBatch is neither [ts, events, rank] nor a map")
    if not isinstance(raw_events, list):
        raise EventDecodeError("EventBatch events is not a list")
    events = []
    for raw in raw_events:
        event = _decode_event(raw)
        if event is not None:
            events.append(event)
    return events


def _fields(raw: Any, names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, dict):
        tag = raw.get("type")
        return tag, raw
    if isinstance(raw, (list, tuple)) and raw:
        return raw[0], dict(zip(names, raw[1:]))
    raise EventDecodeError(f"event is neither a tagged array nor a map: {raw!r:.80}")


def _is_main_group(fields: dict[str, Any]) -> bool:
    kind = fields.get("kv_cache_spec_kind")
    if kind not in MAIN_ATTENTION_KINDS:
        return False
    if kind is None and fields.get("group_idx") not in (None, 0):
        return False
    return fields.get("medium") in (None, "GPU", "gpu")


def _decode_event(raw: Any) -> KvEvent | None:
    tag = raw.get("type") if isinstance(raw, dict) else (raw[0] if isinstance(raw, (list, tuple)) and raw else None)
    if tag == "BlockStored":
        _, fields = _fields(raw, _STORED_FIELDS)
        if not _is_main_group(fields):
            return None
        parent = fields.get("parent_block_hash")
        return BlockStored([normalize_hash(h) for h in fields.get("block_hashes") or []],
                           None if parent is None else normalize_hash(parent),
                           list(fields.get("token_ids") or []), int(fields.get("block_size") or 0))
    if tag == "BlockRemoved":
        _, fields = _fields(raw, _REMOVED_FIELDS)
        if not _is_main_group(fields):
            return None
        return BlockRemoved([normalize_hash(h) for h in fields.get("block_hashes") or []])
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    if tag is None:
        raise EventDecodeError(f"event without a type tag: {raw!r:.80}")
    return None  # an event kind we do not index (e.g. future additions)


def encode_batch(ts: float, events: list[KvEvent], *, encoding: str = "array", dp_rank: int | None = None) -> bytes:
    """MessagePack of an EventBatch as an engine sends it (``encoding`` = "array" or "map")."""
    raw = [_encode_event(event, encoding) for event in events]
    if encoding == "map":
        return msgspec.msgpack.encode({"ts": ts, "events": raw, "data_parallel_rank": dp_rank})
    return msgspec.msgpack.encode([ts, raw, dp_rank])


def _encode_event(event: KvEvent, encoding: str) -> Any:
    if isinstance(event, BlockStored):
        tag, values = "BlockStored", {"block_hashes": event.block_hashes, "parent_block_hash": event.parent,
                                      "token_ids": event.token_ids, "block_size": event.block_size,
                                      "medium": "GPU"}
        names = _STORED_FIELDS
    elif isinstance(event, BlockRemoved):
        tag, values, names = "BlockRemoved", {"block_hashes": event.block_hashes, "medium": "GPU"}, _REMOVED_FIELDS
    else:
        tag, values, names = "AllBlocksCleared", {}, ()
    if encoding == "map":
        return {"type": tag, **values}
    positional = [values.get(name) for name in names]
    while positional and positional[-1] is None:
        positional.pop()
    return [tag, *positional]
