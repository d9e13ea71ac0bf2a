"""Micro-benchmarks of the native KV code next to straightforward pure-Python dict versions, same run.

    python bench/micro_kv.py [--blocks 1000000] [--workers 64] [--prompt-tokens 8192] [--block-size 16]

Measures (p50/p99 of single calls, or throughput), each native figure next to the pure-Python one and their
ratio:
  - hashing one prompt into chained block hashes (token list, and token array('I') for the native side);
  - ingestion: KV-event-sized batches of block hashes stored for a worker, blocks/s;
  - find_matches of one prompt's block hashes against the full index (hash list, and array('Q')).
The index holds --blocks blocks: prompts of which a few workers hold prefixes of random depths (one holds
the whole prompt, so lookups walk every block), plus random blocks spread over all workers. Queries visit
the prompts in random order, so most of their entries are not in cache. Runs in well under a minute.
"""

from __future__ import annotations

import argparse
import array
import gc
import random
import struct
import sys
import time
from pathlib import Path

import xxhash

try:
    from frontend.kv import KvIndexReader, KvIndexWriter, block_hashes
except ImportError:  # run from a checkout without the package on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from frontend.kv import KvIndexReader, KvIndexWriter, block_hashes

EVENT_BATCH = 64  # blocks per store call, as KV event batches carry them


# == Pure-Python versions ==================================================================================

def py_block_hashes(tokens: list[int], block_size: int) -> list[int]:
    out: list[int] = []
    parent = None
    for i in range(0, len(tokens) - block_size + 1, block_size):
        local = xxhash.xxh3_64_intdigest(struct.pack(f"<{block_size}I", *tokens[i:i + block_size]), seed=1337)
        parent = local if parent is None else xxhash.xxh3_64_intdigest(struct.pack("<QQ", parent, local), seed=1337)
        out.append(parent)
    return out


class PyIndex:
    """The obvious dict: sequence hash -> bitmask of workers."""

    def __init__(self) -> None:
        self.masks: dict[int, int] = {}

    def store(self, slot: int, hashes: list[int]) -> None:
        bit = 1 << slot
        masks = self.masks
        for h in hashes:
            masks[h] = masks.get(h, 0) | bit

    def find_matches(self, hashes: list[int]) -> dict[int, int]:
        scores: dict[int, int] = {}
        masks = self.masks
        candidates = -1
        depth = 0
        for h in hashes:
            held = masks.get(h, 0) & candidates
            if depth:
                gone = candidates & ~held
                while gone:
                    low = gone & -gone
                    scores[low.bit_length() - 1] = depth
                    gone ^= low
            candidates = held
            if not candidates:
                break
            depth += 1
        while candidates > 0:
            low = candidates & -candidates
            scores[low.bit_length() - 1] = depth
            candidates ^= low
        return scores


# == Measuring =============================================================================================

def latencies_us(fn, items, prepare=lambda item: item) -> list[float]:
    """Sorted latencies of fn(*prepare(item)) in microseconds; prepare() runs outside the timing."""
    out = []
    clock = time.perf_counter_ns
    for item in items:
        args = prepare(item)
        t0 = clock()
        fn(*args)
        out.append((clock() - t0) / 1000)
    out.sort()
    return out


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def row(label: str, native: list[float], python: list[float]) -> None:
    n50, n99, p50, p99 = pct(native, .5), pct(native, .99), pct(python, .5), pct(python, .99)
    print(f"  {label:<34} native p50 {n50:8.1f} us  p99 {n99:8.1f} us | python p50 {p50:9.1f} us"
          f"  p99 {p99:9.1f} us | x{p50 / n50:,.0f} (p50)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=1_000_000, help="blocks in the index")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=8192)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=500, help="distinct indexed prompts")
    parser.add_argument("--queries", type=int, default=3000, help="find_matches calls measured (native)")
    args = parser.parse_args(argv)
    rng = random.Random(42)
    nblocks_prompt = args.prompt_tokens // args.block_size
    started = time.perf_counter()
    print(f"KV micro-benchmarks: {args.blocks:,} blocks, {args.workers} workers, "
          f"{args.prompt_tokens}-token prompts = {nblocks_prompt} blocks of {args.block_size}")
    gc.collect()
    gc.disable()

    # -- hashing ---------------------------------------------------------------------------------------------
    # Inputs are rebuilt (untimed) before each call, as fresh from the tokenizer or a msgpack decoder: a list
    # of ints that are in cache, or an array.
    prompts_tokens = [array.array("I", (rng.randrange(150_000) for _ in range(args.prompt_tokens)))
                      for _ in range(20)]
    assert list(block_hashes(prompts_tokens[0], args.block_size)) == py_block_hashes(prompts_tokens[0].tolist(),
                                                                                     args.block_size)
    as_list = lambda t: (t.tolist(), args.block_size)  # noqa: E731
    native_list = latencies_us(block_hashes, prompts_tokens * 100, as_list)
    native_array = latencies_us(block_hashes, prompts_tokens * 100, lambda t: (t, args.block_size))
    python_hash = latencies_us(py_block_hashes, prompts_tokens * 3, as_list)
    print("hashing one prompt")
    row("token list", native_list, python_hash)
    row("token array('I') (native)", native_array, python_hash)

    # -- ingestion ---------------------------------------------------------------------------------------------
    prompts = [[rng.getrandbits(64) for _ in range(nblocks_prompt)] for _ in range(args.prompts)]
    prompt_entries = args.prompts * nblocks_prompt
    fill = [rng.getrandbits(64) for _ in range(max(0, args.blocks - prompt_entries))]
    batches = [(i // EVENT_BATCH % args.workers, fill[i:i + EVENT_BATCH]) for i in range(0, len(fill), EVENT_BATCH)]
    writer = KvIndexWriter(capacity_blocks=args.blocks, max_workers=args.workers)
    pyindex = PyIndex()
    try:
        slots = [writer.assign_slot(f"worker-{i}") for i in range(args.workers)]
        t0 = time.perf_counter()
        for slot, batch in batches:
            writer.store(slot, batch)
        native_rate = len(fill) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for slot, batch in batches:
            pyindex.store(slot, batch)
        python_rate = len(fill) / (time.perf_counter() - t0)
        print("ingestion (store, batches of 64 hashes as lists)")
        print(f"  {'blocks/s':<34} native {native_rate / 1e6:8.2f} M/s        | python {python_rate / 1e6:9.2f} M/s"
              f"           | x{native_rate / python_rate:,.0f}")
        # Arrays on a second pass over the same blocks: every bit is already set, so this is lookup cost.
        holders = []
        for prompt in prompts:
            owners = rng.sample(slots, 1 + min(10, args.workers - 1))
            depths = [nblocks_prompt] + [rng.randrange(1, nblocks_prompt + 1) for _ in owners[1:]]
            holders.append(dict(zip(owners, depths)))
            for slot, depth in zip(owners, depths):
                writer.store(slot, prompt[:depth])
                pyindex.store(slot, prompt[:depth])
        stats = writer.stats()
        print(f"  index: {stats['live_entries']:,} live entries, capacity {stats['capacity']:,}, "
              f"{stats['segment_bytes'] / 2**20:.0f} MiB shared, dropped {stats['dropped_inserts']}")

        # -- find_matches ----------------------------------------------------------------------------------
        reader = KvIndexReader(writer.name)
        order = [rng.randrange(args.prompts) for _ in range(args.queries)]
        for q in order[:50]:
            assert reader.find_matches(prompts[q], 0.0, -1.0) == holders[q] == pyindex.find_matches(prompts[q])
        now = time.monotonic()
        packed_prompts = [array.array("Q", p) for p in prompts]
        native_find = latencies_us(reader.find_matches, order, lambda q: (packed_prompts[q].tolist(), now, 1.0))
        native_find_array = latencies_us(reader.find_matches, order, lambda q: (packed_prompts[q], now, 1.0))
        python_find = latencies_us(pyindex.find_matches, order[:max(100, args.queries // 10)],
                                   lambda q: (packed_prompts[q].tolist(),))
        print(f"find_matches of one prompt ({nblocks_prompt} blocks, every one matched by >= 1 worker)")
        row("hash list", native_find, python_find)
        row("hash array('Q') (native)", native_find_array, python_find)
        reader.close()
    finally:
        writer.close()
        gc.enable()
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
