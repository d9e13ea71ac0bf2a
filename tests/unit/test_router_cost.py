"""Dynamo's KV routing cost and selection (frontend/router/cost.py)."""

import random
from collections import Counter

import pytest

from frontend.router.cost import WorkerLoad, select_worker, worker_cost

# Dynamo's documented worked example: W1 = 8 + 10 = 18, W2 = 5 + 5 = 10 (chosen), W3 = 2 + 9 = 11.
ISL, BLOCK = 160, 16
W1 = WorkerLoad("w1", overlap_blocks=2, active_blocks=2, active_prefill_tokens=0)
W2 = WorkerLoad("w2", overlap_blocks=5, active_blocks=0, active_prefill_tokens=0)
W3 = WorkerLoad("w3", overlap_blocks=8, active_blocks=7, active_prefill_tokens=0)


def test_worked_example_costs():
    assert worker_cost(W1, isl=ISL, block_size=BLOCK, overlap_weight=1.0) == 18
    assert worker_cost(W2, isl=ISL, block_size=BLOCK, overlap_weight=1.0) == 10
    assert worker_cost(W3, isl=ISL, block_size=BLOCK, overlap_weight=1.0) == 11


def test_worked_example_picks_lowest_cost():
    chosen = select_worker([W1, W2, W3], isl=ISL, block_size=BLOCK, overlap_weight=1.0, temperature=0)
    assert chosen.instance_id == "w2"


def test_active_prefill_tokens_count_as_prefill_blocks():
    busy = WorkerLoad("busy", 0, 0, active_prefill_tokens=320)
    assert worker_cost(busy, isl=ISL, block_size=BLOCK, overlap_weight=1.0) == (320 + 160) / 16 + 10


def test_weight_zero_is_pure_load_balancing():
    cached_but_loaded = WorkerLoad("a", overlap_blocks=10, active_blocks=30, active_prefill_tokens=0)
    idle = WorkerLoad("b", overlap_blocks=0, active_blocks=0, active_prefill_tokens=0)
    chosen = select_worker([cached_but_loaded, idle], isl=ISL, block_size=BLOCK, overlap_weight=0.0, temperature=0)
    assert chosen.instance_id == "b"


def test_ties_prefer_fewest_cached_blocks():
    a = WorkerLoad("a", 0, 0, 0, cached_blocks=50)
    b = WorkerLoad("b", 0, 0, 0, cached_blocks=5)
    for _ in range(20):
        assert select_worker([a, b], isl=ISL, block_size=BLOCK, overlap_weight=1.0, temperature=0).instance_id == "b"


def test_ties_are_random_otherwise():
    loads = [WorkerLoad(f"w{i}", 0, 0, 0) for i in range(3)]
    rng = random.Random(1)
    seen = Counter(select_worker(loads, isl=ISL, block_size=BLOCK, overlap_weight=1.0, temperature=0,
                                 rng=rng).instance_id for _ in range(300))
    assert set(seen) == {"w0", "w1", "w2"}


def test_temperature_samples_cheaper_workers_more_often():
    rng = random.Random(7)
    picks = Counter(select_worker([W1, W2, W3], isl=ISL, block_size=BLOCK, overlap_weight=1.0, temperature=0.5,
                                  rng=rng).instance_id for _ in range(3000))
    assert picks["w2"] > picks["w3"] > picks["w1"] > 0


def test_temperature_with_equal_costs_is_uniform():
    loads = [WorkerLoad(f"w{i}", 0, 0, 0) for i in range(4)]
    rng = random.Random(3)
    picks = Counter(select_worker(loads, isl=ISL, block_size=BLOCK, overlap_weight=1.0, temperature=1.0,
                                  rng=rng).instance_id for _ in range(4000))
    assert all(800 < count < 1200 for count in picks.values())


@pytest.mark.parametrize("overlap", [0, 5, 10, 12])
def test_overlap_beyond_request_never_goes_negative(overlap):
    load = WorkerLoad("w", overlap, 0, 0)
    assert worker_cost(load, isl=ISL, block_size=BLOCK, overlap_weight=1.0) >= 0
