"""Applying one worker's KV events to the index (frontend/indexer/worker_state.py)."""

import struct

import xxhash

from frontend.indexer.worker_state import WorkerKvState
from frontend.protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored

BS = 4


def local_hashes(tokens, block_size):
    return [xxhash.xxh3_64_intdigest(struct.pack(f"<{block_size}I", *tokens[i:i + block_size]), seed=1337)
            for i in range(0, len(tokens) - block_size + 1, block_size)]


def chain(parent, local):
    out = []
    for value in local:
        parent = value if parent is None else xxhash.xxh3_64_intdigest(struct.pack("<QQ", parent, value), seed=1337)
        out.append(parent)
    return out


class FakeIndex:
    def __init__(self):
        self.blocks = {}

    def store(self, slot, hashes):
        for h in hashes:
            self.blocks.setdefault(h, set()).add(slot)

    def remove(self, slot, hashes):
        for h in hashes:
            self.blocks.get(h, set()).discard(slot)

    def clear_worker(self, slot):
        for holders in self.blocks.values():
            holders.discard(slot)

    def held(self, slot):
        return {h for h, holders in self.blocks.items() if slot in holders}


def make_state(index=None):
    return WorkerKvState("w", 3, BS, index or FakeIndex(), local_hashes, chain)


def test_router_hashes_match_request_hashes_across_chained_stores():
    state = make_state()
    tokens = list(range(12))
    state.apply(BlockStored([101, 102], None, tokens[:8], BS))
    state.apply(BlockStored([103], 102, tokens[8:12], BS))
    assert state.index.held(3) == set(chain(None, local_hashes(tokens, BS)))


def test_removal_uses_engine_hash_mapping():
    state = make_state()
    state.apply(BlockStored([101, 102], None, list(range(8)), BS))
    state.apply(BlockRemoved([102, 999]))
    assert state.index.held(3) == {chain(None, local_hashes(list(range(8)), BS))[0]}
    assert state.engine_to_router.keys() == {101}


def test_unknown_parent_is_an_orphan_not_a_wrong_hash():
    state = make_state()
    state.apply(BlockStored([5], 4242, [1, 2, 3, 4], BS))
    assert state.orphans == 1 and not state.index.held(3)


def test_block_size_mismatch_is_recorded_and_ignored():
    state = make_state()
    state.apply(BlockStored([5], None, list(range(16)), 16))
    assert state.mismatched_block_size == 16 and not state.index.held(3)
    assert state.status()["block_size_mismatch"] == 16


def test_cleared_drops_everything():
    state = make_state()
    state.apply(BlockStored([1, 2], None, list(range(8)), BS))
    state.apply(AllBlocksCleared())
    assert not state.index.held(3) and not state.engine_to_router


def test_sequence_classification():
    state = make_state()
    assert state.check_seq(7) == "next"  # first batch seen
    state.apply_batch(7, [])
    assert state.check_seq(8) == "next"
    assert state.check_seq(7) == "duplicate"
    assert state.check_seq(0) == "restart"
    assert state.check_seq(10) == "gap"
