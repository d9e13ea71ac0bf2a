"""KV event wire format: both encodings, hash forms, filtering (frontend/protocol/kv_events.py)."""

import msgspec
import pytest

from frontend.protocol.kv_events import (AllBlocksCleared, BlockRemoved, BlockStored, EventDecodeError, decode_batch,
                                         decode_seq, encode_batch, encode_seq, normalize_hash)

BIG = (1 << 63) + 12345  # above i64


@pytest.mark.parametrize("encoding", ["array", "map"])
def test_round_trip(encoding):
    events = [BlockStored([1, BIG], None, list(range(32)), 16), BlockRemoved([BIG]), AllBlocksCleared()]
    assert decode_batch(encode_batch(1.5, events, encoding=encoding)) == events


def test_array_batch_with_map_events_as_vllm_026_sends():
    payload = msgspec.msgpack.encode([1.0, [
        {"type": "BlockStored", "block_hashes": [7], "parent_block_hash": 3, "token_ids": [1] * 16,
         "block_size": 16, "medium": "GPU", "group_idx": 0, "kv_cache_spec_kind": "full_attention",
         "extra_keys": [None], "some_future_field": 1},
        {"type": "BlockRemoved", "block_hashes": [7], "medium": "GPU"},
    ], 0])
    assert decode_batch(payload) == [BlockStored([7], 3, [1] * 16, 16), BlockRemoved([7])]


def test_map_batch_with_array_events():
    payload = msgspec.msgpack.encode({"ts": 1.0, "events": [["BlockRemoved", [5, 6]]], "data_parallel_rank": None})
    assert decode_batch(payload) == [BlockRemoved([5, 6])]


def test_old_short_array_events_and_batch_without_rank():
    payload = msgspec.msgpack.encode([1.0, [["BlockStored", [9], None, [2] * 4, 4, None]]])
    assert decode_batch(payload) == [BlockStored([9], None, [2] * 4, 4)]


def test_hash_forms():
    assert normalize_hash(-1) == (1 << 64) - 1
    assert normalize_hash(BIG) == BIG
    digest = bytes(range(32))
    assert normalize_hash(digest) == int.from_bytes(digest[-8:], "big")
    with pytest.raises(EventDecodeError):
        normalize_hash(True)
    with pytest.raises(EventDecodeError):
        normalize_hash(1.5)


def test_bytes_hashes_in_events():
    digest = b"\x01" * 24 + b"\x00\x00\x00\x00\x00\x00\x01\x00"
    payload = msgspec.msgpack.encode([1.0, [["BlockRemoved", [digest]]], None])
    assert decode_batch(payload) == [BlockRemoved([256])]


@pytest.mark.parametrize("fields", [
    {"kv_cache_spec_kind": "sliding_window"},
    {"kv_cache_spec_kind": "mamba"},
    {"group_idx": 1},
    {"medium": "CPU"},
])
def test_only_main_attention_gpu_blocks_are_indexed(fields):
    event = {"type": "BlockStored", "block_hashes": [1], "parent_block_hash": None, "token_ids": [0] * 16,
             "block_size": 16, **fields}
    assert decode_batch(msgspec.msgpack.encode([1.0, [event], 0])) == []


def test_unknown_event_kinds_are_skipped():
    assert decode_batch(msgspec.msgpack.encode([1.0, [["SomethingNew", 1]], 0])) == []


@pytest.mark.parametrize("payload", [b"\xc1", msgspec.msgpack.encode(5), msgspec.msgpack.encode([1.0, 3]),
                                     msgspec.msgpack.encode([1.0, [[]]]), msgspec.msgpack.encode([1.0, [{}]])])
def test_malformed_batches_raise_decode_error(payload):
    with pytest.raises(EventDecodeError):
        decode_batch(payload)


def test_sequence_frames():
    assert encode_seq(258) == b"\x00" * 6 + b"\x01\x02"
    assert decode_seq(encode_seq((1 << 64) - 1)) == (1 << 64) - 1
    with pytest.raises(EventDecodeError):
        decode_seq(b"\x00")
