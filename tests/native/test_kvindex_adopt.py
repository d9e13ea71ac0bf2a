"""A restarted indexer adopts the KV index segment its predecessor left: slots and load kept, blocks dropped."""

from __future__ import annotations

import os

import pytest

from frontend.kv import KvIndexReader, KvIndexWriter, block_hashes


def test_adopt_keeps_slots_and_load_and_drops_blocks():
    name = f"dyn-kvindex-test-{os.getpid()}-adopt"
    first = KvIndexWriter(name=name, capacity_blocks=1024, max_workers=8)
    reader = KvIndexReader(name)
    try:
        slot = first.assign_slot("w1")
        hashes = block_hashes(list(range(64)), 16)
        first.store(slot, hashes)
        reader.add_load(slot, 2, 5, 100)
        assert reader.find_matches(hashes, 0.0, 0.0) == {slot: 4}
        # the first writer dies without unlinking (SIGKILL); a new one adopts the segment by name
        second = KvIndexWriter(name=name, capacity_blocks=1024, max_workers=8, adopt=True)
        assert second.slots() == [(slot, "w1")] and second.assign_slot("w1") == slot
        assert reader.load(slot) == (2, 5, 100)  # the gateways' in-flight load survives
        assert reader.find_matches(hashes, 0.0, 0.0) == {}  # blocks the new writer never saw are gone
        second.store(slot, hashes)
        assert reader.find_matches(hashes, 0.0, 0.0) == {slot: 4}  # the reader's mapping is the adopted one
        with pytest.raises(ValueError, match="differ"):
            KvIndexWriter(name=name, capacity_blocks=1024, max_workers=16, adopt=True)
        second.close()
    finally:
        reader.close()
        first.close()


def test_without_adopt_an_existing_segment_is_an_error():
    name = f"dyn-kvindex-test-{os.getpid()}-exists"
    first = KvIndexWriter(name=name, capacity_blocks=1024, max_workers=8)
    try:
        with pytest.raises(FileExistsError):
            KvIndexWriter(name=name, capacity_blocks=1024, max_workers=8)
    finally:
        first.close()
