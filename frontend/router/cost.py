"""Dynamo's KV routing cost and worker selection, as pure functions.

For a request of ``isl`` tokens (``request_blocks`` full blocks) and a worker that already holds
``overlap`` leading blocks of it:

    prefill_blocks = (worker's active prefill tokens + max(isl - overlap * block_size, 0)) / block_size
    decode_blocks  = worker's active blocks + (request_blocks - overlap)
    cost           = overlap_weight * prefill_blocks + decode_blocks

Temperature 0 picks the lowest cost (ties: the worker with the fewest cached blocks, then at random).
Temperature T > 0 samples from softmax(-normalized cost / T), where costs are scaled to [0, 1] by the
spread between the cheapest and the most expensive worker (uniform when they are all equal).
"""

from __future__ import annotations

import math
import random

import msgspec


class WorkerLoad(msgspec.Struct, frozen=True):
    """What the router knows about one candidate worker for one request (a Struct: one is built per worker per
    routing decision, and a frozen dataclass costs several times more to build)."""

    instance_id: str
    overlap_blocks: int
    active_blocks: int
    active_prefill_tokens: int
    cached_blocks: int = 0


def worker_cost(load: WorkerLoad, *, isl: int, block_size: int, overlap_weight: float) -> float:
    request_blocks = isl // block_size
    new_prefill_tokens = max(isl - load.overlap_blocks * block_size, 0)
    prefill_blocks = (load.active_prefill_tokens + new_prefill_tokens) / block_size
    decode_blocks = load.active_blocks + max(request_blocks - load.overlap_blocks, 0)
    return overlap_weight * prefill_blocks + decode_blocks


def select_worker(loads: list[WorkerLoad], *, isl: int, block_size: int, overlap_weight: float,
                  temperature: float, rng: random.Random | None = None) -> WorkerLoad:
    """The chosen worker among ``loads`` (which must not be empty)."""
    rng = rng or random
    costs = [worker_cost(load, isl=isl, block_size=block_size, overlap_weight=overlap_weight) for load in loads]
    if temperature <= 0:
        best = min(costs)
        tied = [load for load, cost in zip(loads, costs) if cost == best]
        fewest = min(load.cached_blocks for load in tied)
        return rng.choice([load for load in tied if load.cached_blocks == fewest])
    return loads[_softmax_sample(costs, temperature, rng)]


def _softmax_sample(costs: list[float], temperature: float, rng) -> int:
    low, high = min(costs), max(costs)
    if high == low:
        return rng.randrange(len(costs))
    logits = [-(cost - low) / ((high - low) * temperature) for cost in costs]
    top = max(logits)
    weights = [math.exp(logit - top) for logit in logits]
    threshold = rng.random() * sum(weights)
    for index, weight in enumerate(weights):
        threshold -= weight
        if threshold <= 0:
            return index
    return len(weights) - 1
