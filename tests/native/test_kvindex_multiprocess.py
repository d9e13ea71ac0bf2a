"""The KV index shared by processes: readers never see a torn entry, shared counters add up exactly.

The writer (this process) moves every key of a family F through states that are prefixes of a chain of
slots spread over all four mask words: it adds the chain's slots in order and removes them in reverse, so
the holders of a key are always {C[0], ..., C[j-1]} for some j. A reader that saw a torn entry (words from
two different moments) would see a set that is not such a prefix, e.g. {200} without {0}. Meanwhile the
writer churns other keys so that compactions flip the active table under the readers, predicts and expires,
and reassigns a worker slot with ids of different lengths.
"""

from __future__ import annotations

import multiprocessing
import random
import time

from frontend.kv import KvIndexReader, KvIndexWriter

CHAIN = [0, 63, 64, 130, 200, 255]  # one slot per mask word at least
FAMILY = [0x1000 + i for i in range(24)]
CHURN_SLOT, PREDICT_SLOT, RENAMED_SLOT = 1, 2, 10
RENAMES = ("x" * 64, "yyy")
WRITER_SECONDS = 1.5


def is_chain_prefix(slots) -> bool:
    return set(slots) == set(CHAIN[:len(slots)])


def reader_loop(name: str, ready, stop, results) -> None:
    reader = KvIndexReader(name)
    checks, problems = 0, []
    generations = {reader.stats()["generation"]}
    ready.set()
    while not stop.is_set():
        for key in FAMILY:
            held = reader.find_matches([key], 0.0, -1.0)
            if not is_chain_prefix(held) or any(v != 1 for v in held.values()):
                problems.append(("entry", key, held))
        whole = reader.find_matches(FAMILY, 0.0, -1.0)
        counts = [whole.get(slot, 0) for slot in CHAIN]
        if not is_chain_prefix(whole) or counts != sorted(counts, reverse=True):
            problems.append(("request", whole))
        ident = reader.worker_id(RENAMED_SLOT)
        if ident not in (None, f"w{RENAMED_SLOT}", *RENAMES):
            problems.append(("worker id", ident))
        checks += len(FAMILY) + 2
        generations.add(reader.stats()["generation"])
        if len(problems) > 20:
            break
    reader.close()
    results.put((checks, problems, len(generations)))


def load_loop(name: str, n: int, results) -> None:
    reader = KvIndexReader(name)
    for _ in range(n):
        reader.add_load(5, 1, 2, 3)
    for _ in range(n // 2):
        reader.add_load(5, -1, -2, -3)
    tickets = [reader.next_round_robin() for _ in range(n // 4)]
    reader.close()
    results.put(tickets)


def test_readers_never_see_torn_entries():
    ctx = multiprocessing.get_context("spawn")
    writer = KvIndexWriter(capacity_blocks=3000, max_workers=256)
    for i in range(256):
        writer.assign_slot(f"w{i}")
    ready = [ctx.Event() for _ in range(2)]
    stop = ctx.Event()
    results = ctx.Queue()
    readers = [ctx.Process(target=reader_loop, args=(writer.name, r, stop, results)) for r in ready]
    try:
        for p in readers:
            p.start()
        for r in ready:
            assert r.wait(30), "reader did not start"
        rng = random.Random(5)
        rounds = 0
        deadline = time.monotonic() + WRITER_SECONDS
        while time.monotonic() < deadline:
            for slot in CHAIN:
                writer.store(slot, FAMILY)
            for slot in reversed(CHAIN):
                writer.remove(slot, FAMILY)
            churn = [rng.getrandbits(64) for _ in range(400)]
            writer.store(CHURN_SLOT, churn)
            writer.remove(CHURN_SLOT, churn)
            writer.predict(PREDICT_SLOT, FAMILY, time.monotonic())
            writer.expire_predictions(time.monotonic() - 0.01)
            writer.free_slot(RENAMED_SLOT)
            assert writer.assign_slot(RENAMES[rounds % 2]) == RENAMED_SLOT
            rounds += 1
        stop.set()
        outcomes = [results.get(timeout=30) for _ in readers]
        for p in readers:
            p.join(30)
            assert p.exitcode == 0
    finally:
        stop.set()
        for p in readers:
            if p.is_alive():
                p.kill()
        writer_stats = writer.stats()
        writer.close()
    for checks, problems, generations in outcomes:
        assert problems == []
        assert checks > 1000
        assert generations > 1  # compactions happened while this reader was reading
    assert writer_stats["compactions"] >= 3 and rounds > 20


def test_shared_counters_sum_exactly():
    ctx = multiprocessing.get_context("spawn")
    n, procs = 20_000, 3
    with KvIndexWriter(capacity_blocks=10, max_workers=8) as writer:
        results = ctx.Queue()
        workers = [ctx.Process(target=load_loop, args=(writer.name, n, results)) for _ in range(procs)]
        for p in workers:
            p.start()
        tickets = [t for _ in workers for t in results.get(timeout=30)]
        for p in workers:
            p.join(30)
            assert p.exitcode == 0
        half = procs * (n - n // 2)
        assert writer.load(5) == (half, 2 * half, 3 * half)
        assert sorted(tickets) == list(range(procs * (n // 4)))
