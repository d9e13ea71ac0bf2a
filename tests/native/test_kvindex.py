"""Semantics of the shared-memory KV index (native/kvindex.pyx) in one process."""

from __future__ import annotations

import array
import os
import random
import subprocess
import sys

import pytest

from frontend.kv import KvIndexReader, KvIndexWriter, remove_stale_segments


@pytest.fixture
def index():
    writer = KvIndexWriter(capacity_blocks=1000, max_workers=256)
    reader = KvIndexReader(writer.name)
    yield writer, reader
    reader.close()
    writer.close()


def test_prefix_overlap(index):
    writer, reader = index
    a, b, c = (writer.assign_slot(w) for w in ("a", "b", "c"))
    writer.store(a, [1, 2, 3, 4, 5])
    writer.store(b, [1, 2, 3])
    writer.store(c, [2, 3, 4])  # no block 1: no overlap with requests that start at 1
    assert reader.find_matches([1, 2, 3, 4, 5, 6], 0, 0) == {a: 5, b: 3}
    assert reader.find_matches([1, 2, 3, 4, 5], 0, 0) == {a: 5, b: 3}
    assert reader.find_matches([2, 3, 4], 0, 0) == {a: 3, b: 2, c: 3}
    assert reader.find_matches([9, 1, 2], 0, 0) == {}
    assert reader.find_matches([], 0, 0) == {}
    writer.store(b, [5])  # a hole at 4: b still matches only 3
    assert reader.find_matches([1, 2, 3, 4, 5], 0, 0) == {a: 5, b: 3}
    assert writer.find_matches(array.array("Q", [1, 2]), 0, 0) == {a: 2, b: 2}
    assert reader.find_matches(array.array("Q", [1, 2]).tobytes(), 0, 0) == {a: 2, b: 2}


def test_remove_clear_free(index):
    writer, reader = index
    a, b = writer.assign_slot("a"), writer.assign_slot("b")
    writer.store(a, [1, 2, 3])
    writer.store(b, [1, 2, 3])
    writer.remove(a, [2, 99])
    assert reader.find_matches([1, 2, 3], 0, 0) == {a: 1, b: 3}
    assert writer.stats()["slot_blocks"] == {a: 2, b: 3}
    writer.clear_worker(b)
    assert reader.find_matches([1, 2, 3], 0, 0) == {a: 1}
    stats = writer.stats()
    assert stats["slot_blocks"] == {a: 2, b: 0} and stats["live_entries"] == 2 and stats["tombstones"] == 1
    writer.add_load(a, 2, 20, 200)
    generation = reader.slot_generation(a)
    writer.free_slot(a)
    assert reader.find_matches([1, 2, 3], 0, 0) == {}
    assert reader.worker_id(a) is None and reader.load(a) == (0, 0, 0)
    assert reader.slot_generation(a) == generation + 1
    assert writer.stats()["live_entries"] == 0
    writer.free_slot(a)  # freeing a free slot is a no-op
    assert writer.assign_slot("c") == a  # lowest free slot is reused
    assert reader.slots() == [(0, "c"), (1, "b")]


def test_slots_and_ids(index):
    writer, reader = index
    assert writer.assign_slot("w0") == 0
    assert writer.assign_slot("w0") == 0  # idempotent
    assert writer.assign_slot("wörker-ü") == 1
    assert reader.worker_id(1) == "wörker-ü" and reader.worker_id(2) is None
    writer.assign_slot("x" * 64)
    with pytest.raises(ValueError):
        writer.assign_slot("x" * 65)
    for bad in (-1, 256):
        with pytest.raises(ValueError):
            reader.worker_id(bad)
        with pytest.raises(ValueError):
            reader.add_load(bad, 1, 1, 1)
    with pytest.raises(ValueError):
        writer.store(5, [1])  # not assigned
    small = KvIndexWriter(capacity_blocks=10, max_workers=2)
    small.assign_slot("a")
    small.assign_slot("b")
    with pytest.raises(RuntimeError):
        small.assign_slot("c")
    small.close()


def test_masks_across_words(index):
    writer, reader = index
    slots = [writer.assign_slot(f"w{i}") for i in range(256)]
    depth = {s: 1 + s % 7 for s in (0, 63, 64, 127, 128, 200, 255)}
    for slot, n in depth.items():
        writer.store(slot, list(range(1, n + 1)))
    assert reader.find_matches(list(range(1, 10)), 0, 0) == depth
    assert slots[-1] == 255


def test_predictions(index):
    writer, reader = index
    a, b = writer.assign_slot("a"), writer.assign_slot("b")
    writer.store(a, [1, 2])
    writer.predict(b, [1, 2, 3], now_s=100.0)
    writer.predict(a, [1, 2, 3], now_s=100.0)  # a already holds 1, 2: only 3 is predicted
    assert reader.find_matches([1, 2, 3], 100.5, 1.0) == {a: 3, b: 3}
    assert reader.find_matches([1, 2, 3], 101.5, 1.0) == {a: 2}  # stale predictions do not count
    assert reader.find_matches([1, 2, 3], 100.5, -1) == {a: 2}  # nor with a negative TTL
    assert reader.find_matches([1, 2, 3], 99.0, 1.0) == {a: 3, b: 3}  # a clock slightly behind is fine
    writer.store(b, [1])  # confirmation replaces b's prediction of block 1
    writer.expire_predictions(100.5)
    assert reader.find_matches([1, 2, 3], 100.5, 10.0) == {a: 2, b: 1}
    stats = writer.stats()
    assert stats["live_entries"] == 2 and stats["tombstones"] == 1  # block 3 was only predicted
    writer.predict(b, [7], now_s=200.0)
    writer.remove(b, [7])  # an eviction also drops the prediction
    assert reader.find_matches([7], 200.0, 10.0) == {}


def test_expiry_after_queue_overflow():
    with KvIndexWriter(capacity_blocks=10, max_workers=4) as writer:  # 16 entries
        a = writer.assign_slot("a")
        writer.predict(a, [1, 2, 3], now_s=10.0)
        writer.predict(a, [1, 2, 3] * 5, now_s=11.0)  # 18 queued keys > 16 entries: expiry sweeps instead
        writer.predict(a, [4], now_s=12.0)
        writer.expire_predictions(10.5)
        assert writer.find_matches([1], 10.5, 100) == {a: 1}  # refreshed at 11
        writer.expire_predictions(11.5)
        assert writer.find_matches([1], 11.5, 100) == {} and writer.find_matches([4], 11.5, 100) == {a: 1}
        writer.expire_predictions(12.5)
        assert writer.find_matches([4], 12.5, 100) == {}
        assert writer.stats()["live_entries"] == 0


def test_capacity_limit_and_reuse():
    with KvIndexWriter(capacity_blocks=100, max_workers=8) as writer:
        a, b = writer.assign_slot("a"), writer.assign_slot("b")
        writer.store(a, range(1, 151))
        stats = writer.stats()
        assert stats["live_entries"] == 100 and stats["dropped_inserts"] == 50
        writer.store(b, range(1, 101))  # existing entries still take more holders
        assert writer.stats()["dropped_inserts"] == 50
        writer.remove(a, range(1, 51))
        writer.remove(b, range(1, 51))
        writer.store(b, range(1000, 1050))
        stats = writer.stats()
        assert stats["live_entries"] == 100 and stats["dropped_inserts"] == 50
        assert writer.find_matches(range(1000, 1050), 0, 0) == {b: 50}


def test_churn_keeps_memory_fixed():
    rng = random.Random(11)
    with KvIndexWriter(capacity_blocks=500, max_workers=64) as writer:
        size = writer.stats()["segment_bytes"]
        slots = [writer.assign_slot(f"w{i}") for i in range(4)]
        held: dict[int, set[int]] = {s: set() for s in slots}
        for round_ in range(100):  # 100 * 100 distinct keys through a 1024-entry table
            slot = rng.choice(slots)
            keys = [rng.getrandbits(64) for _ in range(100)]
            if sum(map(len, held.values())) + 100 <= 500:
                writer.store(slot, keys)
                held[slot].update(keys)
            victim = rng.choice(slots)
            gone = list(held[victim])[: rng.randrange(len(held[victim]) + 1)]
            writer.remove(victim, gone)
            held[victim].difference_update(gone)
        stats = writer.stats()
        assert stats["dropped_inserts"] == 0 and stats["compactions"] > 0
        assert stats["segment_bytes"] == size and stats["capacity"] == 1024
        live = set().union(*held.values())
        assert stats["live_entries"] == len(live)
        assert stats["slot_blocks"] == {s: len(held[s]) for s in slots}
        for slot, keys in held.items():
            for key in list(keys)[:50]:
                assert slot in writer.find_matches([key], 0, 0)


def test_hash_zero_is_a_key(index):
    writer, reader = index
    a = writer.assign_slot("a")
    writer.store(a, [0, 2**64 - 1])
    assert reader.find_matches([0, 2**64 - 1], 0, 0) == {a: 2}
    writer.remove(a, [0])
    assert reader.find_matches([0], 0, 0) == {}


def test_shared_load_and_round_robin(index):
    writer, reader = index
    writer.add_load(3, 1, 16, 1000)
    reader.add_load(3, 1, 8, 500)
    reader.add_load(3, -1, -16, -1000)
    assert writer.load(3) == reader.load(3) == (1, 8, 500)
    assert [writer.next_round_robin(), reader.next_round_robin(), writer.next_round_robin()] == [0, 1, 2]


def test_segment_lifecycle():
    writer = KvIndexWriter(capacity_blocks=10, max_workers=4)
    name = writer.name
    assert name.startswith(f"dyn-kvindex-{os.getpid()}-")
    assert os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(FileExistsError):
        KvIndexWriter(name=name, capacity_blocks=10)
    reader = KvIndexReader("/" + name)  # a leading slash is accepted
    writer.assign_slot("a")
    writer.store(0, [5])
    writer.close()
    assert not os.path.exists(f"/dev/shm/{name}")
    assert reader.find_matches([5], 0, 0) == {0: 1}  # the mapping outlives the unlink
    reader.close()
    reader.close()
    with pytest.raises(ValueError):
        reader.find_matches([5], 0, 0)
    with pytest.raises(FileNotFoundError):
        KvIndexReader(name)
    with pytest.raises(ValueError):
        KvIndexReader("no/slashes")


def test_reader_rejects_foreign_segments():
    name = f"dyn-kvindex-test-{os.getpid()}"
    path = f"/dev/shm/{name}"
    try:
        for content in (b"", b"x" * 100, b"\0" * 8192):
            with open(path, "wb") as f:
                f.write(content)
            with pytest.raises(ValueError):
                KvIndexReader(name)
        writer = KvIndexWriter(capacity_blocks=10, max_workers=4)
        with open(f"/dev/shm/{writer.name}", "rb") as f:
            good = f.read()
        writer.close()
        with open(path, "wb") as f:  # a valid header on a truncated segment
            f.write(good[: len(good) // 2])
        with pytest.raises(ValueError, match="bytes"):
            KvIndexReader(name)
    finally:
        os.unlink(path)


def test_bad_arguments():
    with pytest.raises(ValueError):
        KvIndexWriter(max_workers=0)
    with pytest.raises(ValueError):
        KvIndexWriter(max_workers=257)
    with pytest.raises(ValueError):
        KvIndexWriter(capacity_blocks=0)
    with KvIndexWriter(capacity_blocks=10, max_workers=4) as writer:
        slot = writer.assign_slot("a")
        with pytest.raises(OverflowError):
            writer.store(slot, [-1])
        with pytest.raises(TypeError):
            writer.store(slot, array.array("I", [1, 2]))
        assert writer.stats()["live_entries"] == 0


def test_remove_stale_segments(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead = int(done.stdout)
    stale = tmp_path / f"dyn-kvindex-{dead}-0123abcd"
    alive = tmp_path / f"dyn-kvindex-{os.getpid()}-0123abcd"
    other = tmp_path / f"dyn-kvindex-{dead}-custom"
    for path in (stale, alive, other):
        path.write_bytes(b"")
    assert remove_stale_segments(str(tmp_path)) == [stale.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
    assert remove_stale_segments(str(tmp_path / "missing")) == []


def test_writer_that_exits_without_close_unlinks():
    code = "from frontend.kv import KvIndexWriter; w = KvIndexWriter(capacity_blocks=10, max_workers=4); print(w.name)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    assert not os.path.exists(f"/dev/shm/{done.stdout.strip()}")
