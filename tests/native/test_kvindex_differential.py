"""The native KV index against its pure-Python twin (frontend/kv/index_reference.py) on random operations.

Small tables so that refused inserts, tombstone reuse and compactions happen often; 130 workers so that
masks span three words.
"""

from __future__ import annotations

import random

import pytest

from frontend.kv import KvIndexReader, KvIndexWriter
from frontend.kv.index_reference import ReferenceKvIndex

WORKER_IDS = [f"worker-{i}" for i in range(8)]
COMPARED_STATS = ("capacity_blocks", "max_workers", "live_entries", "dropped_inserts", "slot_blocks")


def run(seed: int, steps: int) -> dict:
    rng = random.Random(seed)
    capacity_blocks = rng.choice([20, 60, 100])
    max_workers = rng.choice([8, 64, 130])
    # Request-like key sequences (prefixes are shared) plus stray keys; hash 0 included.
    sequences = [[rng.getrandbits(64) for _ in range(16)] for _ in range(6)] + [[0, 1, 2, 3]]
    native = KvIndexWriter(capacity_blocks=capacity_blocks, max_workers=max_workers)
    reader = KvIndexReader(native.name)
    ref = ReferenceKvIndex(capacity_blocks=capacity_blocks, max_workers=max_workers)
    now = 1000.0
    slots: list[int] = []

    def keys() -> list[int]:
        seq = rng.choice(sequences)
        if rng.random() < 0.6:
            start = rng.randrange(3) if rng.random() < 0.3 else 0
            return seq[start:rng.randrange(start, len(seq) + 1)]
        return rng.sample(seq, rng.randrange(len(seq)))

    def both(method: str, *args):
        expected = getattr(ref, method)(*args)
        assert getattr(native, method)(*args) == expected, (method, args)
        return expected

    try:
        for step in range(steps):
            op = rng.random()
            if op < 0.08 or not slots:
                worker = rng.choice(WORKER_IDS)
                if len(slots) < max_workers or worker in (native.worker_id(s) for s in slots):
                    slot = both("assign_slot", worker)
                    if slot not in slots:
                        slots.append(slot)
            elif op < 0.40:
                both("store", rng.choice(slots), keys())
            elif op < 0.58:
                both("remove", rng.choice(slots), keys())
            elif op < 0.72:
                now += rng.choice([0.0, 0.001, 0.05, 0.3])
                both("predict", rng.choice(slots), keys(), now)
            elif op < 0.80:
                both("expire_predictions", now - rng.choice([0.0, 0.1, 0.5, 5.0]))
            elif op < 0.83:
                both("clear_worker", rng.choice(slots))
            elif op < 0.86:
                slot = rng.choice(slots)
                both("free_slot", slot)
                slots.remove(slot)
            else:
                slot = rng.randrange(max_workers)
                delta = (rng.randrange(-3, 4), rng.randrange(-50, 51), rng.randrange(-900, 901))
                both("add_load", slot, *delta)
                assert reader.load(slot) == ref.load(slot)
            for _ in range(3):
                query = keys()
                ttl = rng.choice([-1.0, 0.0, 0.1, 0.5, 2.0])
                at = now + rng.choice([0.0, 0.05, 0.4, 3.0])
                assert reader.find_matches(query, at, ttl) == ref.find_matches(query, at, ttl), (step, query)
            got, want = native.stats(), ref.stats()
            assert {k: got[k] for k in COMPARED_STATS} == want, step
            assert got["live_entries"] + got["tombstones"] <= got["capacity"]
            if step % 50 == 0:
                assert reader.slots() == ref.slots()
                for slot in range(max_workers):
                    assert reader.slot_generation(slot) == ref.slot_generation(slot)
        return native.stats()
    finally:
        reader.close()
        native.close()


@pytest.mark.parametrize("seed", range(12))
def test_native_matches_reference(seed):
    run(seed, steps=600)


def test_differential_runs_exercise_the_hard_paths():
    totals = {"compactions": 0, "dropped_inserts": 0}
    for seed in range(100, 106):
        stats = run(seed, steps=600)
        for key in totals:
            totals[key] += stats[key]
    assert totals["compactions"] > 0 and totals["dropped_inserts"] > 0
