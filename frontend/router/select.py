"""Picking a worker instance for a request and accounting its load in shared memory.

Modes: ``round_robin`` (one counter shared by all HTTP processes), ``random``, ``kv`` (prefix overlap
from the shared KV block index plus every worker's active load, see ``cost.py``), and Dynamo's
``least_loaded`` (the fewest active requests), ``power_of_two`` (the less loaded of two drawn at random) and
``direct`` (only the instance the request pins; a request that pins none is a 400). A request can pin an
instance in every mode. Active requests are those this daemon routed, or the worker's own report of its running
and waiting requests when that is higher. In every mode the chosen worker's shared load counters (requests, blocks, prefill tokens) are
raised at routing, lowered by the prefill tokens at the first token, and by the rest when the request ends,
so that every HTTP process sees the load the others put on a worker. A worker that reports its own load
(``protocol.load``, stored in the index by the indexer) counts with the larger of the two block counts, so
the busy thresholds follow what the engine really holds. The thresholds (``thresholds.py``, per model) apply in
every mode; a pinned instance is taken even when busy. Every worker busy is ``WorkersBusy`` (529 by default).
"""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Protocol

from ..config.sections import RouterConfig
from ..protocol.errors import InvalidRequest, ServiceUnavailable, WorkersBusy
from .cost import WorkerLoad, select_worker
from .thresholds import BusyThresholds, ThresholdTable

MODES = ("round_robin", "random", "kv", "least_loaded", "power_of_two", "direct")

Hashes = bytes | list[int]  # u64 sequence hashes: array('Q') bytes on the hot path, lists in tests


class SharedIndex(Protocol):
    """The reader side of the shared KV index (frontend.kv.KvIndexReader)."""

    def find_matches(self, seq_hashes: Hashes, now_s: float, predicted_ttl_s: float) -> dict[int, int]: ...

    def slots(self) -> list[tuple[int, str]]: ...

    def worker_id(self, slot: int) -> str | None: ...

    def load(self, slot: int) -> tuple[int, int, int]: ...

    def reported_load(self, slot: int) -> tuple[int, int, int]: ...

    def add_load(self, slot: int, requests: int, blocks: int, prefill_tokens: int) -> None: ...

    def next_round_robin(self, key: int = 0) -> int: ...


@dataclass(frozen=True)
class RouterSettings:
    """Routing knobs (see the ``router`` option group)."""

    mode: str = "round_robin"
    overlap_weight: float = 1.0
    temperature: float = 0.0
    predicted_ttl_s: float = 0.0
    busy: BusyThresholds = BusyThresholds()  # every model's, until the admin API changes one
    overload_status_code: int = 529  # every worker of the model busy
    migration_limit: int = 3  # times a request continues on another worker when its worker goes away
    migration_max_seq_len: int = 0  # longest prompt + generated sequence that migrates; 0 = any
    decode_fallback: bool = True  # a prefill failed on every prefill worker tried: the decode worker prefills

    @classmethod
    def from_config(cls, router: RouterConfig) -> "RouterSettings":
        """What an HTTP process routes with, from the daemon's ``router`` section."""
        return cls(mode=router.router_mode, overlap_weight=router.kv_overlap_score_weight,
                   temperature=router.router_temperature, predicted_ttl_s=router.prediction_ttl_s,
                   busy=BusyThresholds(
                       active_decode_blocks_threshold=router.active_decode_blocks_threshold,
                       active_prefill_tokens_threshold=router.active_prefill_tokens_threshold,
                       active_prefill_tokens_threshold_frac=router.active_prefill_tokens_threshold_frac),
                   overload_status_code=router.overload_status_code, migration_limit=router.migration_limit,
                   migration_max_seq_len=router.migration_max_seq_len, decode_fallback=router.decode_fallback)


WHOLE, PREFILL, DECODE = "whole", "prefill", "decode"  # what of a request is routed (``Router.pick``'s ``leg``)

SLOT_MAP_TTL_S = 0.1
"""How old the map from worker to index slot may be in a KV decision's scoring. A slot is reassigned only after its
worker left, which the process's model table learns at about the same time; the load a route adds is always
accounted to a verified slot (``slot``, ``_owns``)."""


@dataclass
class Route:
    """Where a request went and the load it added (undone by ``Router.first_token`` / ``Router.finish``)."""

    instance_id: str
    slot: int | None
    blocks: int
    prefill_tokens: int
    overlap_blocks: int = 0


class Candidate(Protocol):
    """The part of a served model the router needs."""

    name: str
    instance_ids: list[str]
    block_size: int
    total_kv_blocks: dict[str, int]
    max_batched_tokens: dict[str, int]


class Router:
    """One per HTTP process; all shared state lives in the index's shared memory."""

    def __init__(self, settings: RouterSettings, index: SharedIndex | None = None,
                 send_routed: Callable[[str, Hashes], None] | None = None,
                 thresholds: ThresholdTable | None = None) -> None:
        if settings.mode not in MODES:
            raise ValueError(f"unknown router mode {settings.mode!r}")
        self.settings = settings
        self.index = index
        self.send_routed = send_routed
        self.thresholds = thresholds if thresholds is not None else ThresholdTable(settings.busy)
        self._slots: dict[str, int] = {}
        self._slots_read_at = -SLOT_MAP_TTL_S
        self._local_counter = 0

    def pick(self, model: Candidate, seq_hashes: Hashes, isl: int, pinned: str | None = None, *,
             leg: str = WHOLE) -> Route:
        """Choose a live instance of ``model``: 503 when there is none, ``WorkersBusy`` when all are busy.
        ``leg``: a whole request, or one leg of a disaggregated one (``model`` then lists the workers of that leg).
        A ``DECODE`` leg's prompt KV comes from a prefill worker: the worker computes no prefill, so the KV cost
        weighs only its decode blocks (fewer for the blocks it already holds) and the route adds no prefill
        tokens. Each leg has its own round-robin counter."""
        decode_only = leg == DECODE
        instances = model.instance_ids
        if not instances:
            raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
        mode = self.settings.mode
        if pinned is not None:
            if pinned not in instances:
                raise ServiceUnavailable(f"worker instance `{pinned}` does not serve model `{model.name}`")
            chosen, overlap = pinned, 0
        elif mode == "direct":
            raise InvalidRequest("--router-mode direct: the request must name its worker (header "
                                 "x-worker-instance-id or nvext.backend_instance_id)")
        elif mode == "kv" and self.index is not None:
            chosen, overlap = self._pick_kv(model, seq_hashes, isl, 0.0 if decode_only else None)
        else:
            chosen, overlap = self._pick_by_load(model, mode, leg), 0
        return self._account(model, chosen, seq_hashes, isl, overlap, decode_only)

    def _pick_by_load(self, model: Candidate, mode: str, leg: str) -> str:
        """round_robin, random, least_loaded, power_of_two: among the instances that are not busy."""
        thresholds = self.thresholds.active(model.name)
        candidates = model.instance_ids
        if thresholds is not None:
            candidates = [i for i in candidates if not self._busy(model, i, thresholds, *self._load(self.slot(i)))]
            if not candidates:
                raise self._all_busy(model)
        if mode == "random":
            return random.choice(candidates)
        if mode == "least_loaded":
            return self._least_active(candidates)
        if mode == "power_of_two":
            return self._least_active(random.sample(candidates, 2) if len(candidates) > 2 else candidates)
        return candidates[self._next_round_robin(model.name if leg == WHOLE else f"{model.name}\0{leg}")
                          % len(candidates)]

    def _least_active(self, candidates: list[str]) -> str:
        """The instance with the fewest active requests (ties: one of them at random)."""
        active = [(self._active_requests(self.slot(i)), i) for i in candidates]
        fewest = min(count for count, _ in active)
        return random.choice([i for count, i in active if count == fewest])

    def _active_requests(self, slot: int | None) -> int:
        if slot is None:
            return 0
        running, waiting, _ = self.index.reported_load(slot)
        return max(self.index.load(slot)[0], running + waiting)

    def _all_busy(self, model: Candidate) -> WorkersBusy:
        return WorkersBusy(f"all workers of model `{model.name}` are busy; retry later",
                           status=self.settings.overload_status_code)

    def _load(self, slot: int | None) -> tuple[int, int]:
        """(active blocks, active prefill tokens) of an instance's slot: routed load, or the worker's own report
        of its KV blocks in use when that is higher."""
        if slot is None:
            return 0, 0
        _, blocks, prefill = self.index.load(slot)
        return max(blocks, self.index.reported_load(slot)[2]), prefill

    def _next_round_robin(self, model: str) -> int:
        """The model's shared counter (the same key in every process: not Python's salted hash)."""
        if self.index is not None:
            return self.index.next_round_robin(zlib.crc32(model.encode()))
        self._local_counter += 1
        return self._local_counter

    def _pick_kv(self, model: Candidate, seq_hashes: Hashes, isl: int,
                 overlap_weight: float | None = None) -> tuple[str, int]:
        settings = self.settings
        index = self.index
        # time.monotonic(), the clock the indexer stamps predictions with (system-wide on Linux)
        matches = index.find_matches(seq_hashes, time.monotonic(), settings.predicted_ttl_s) if seq_hashes else {}
        cached = index.stats()["slot_blocks"]  # tie-break: the worker with the fewest cached blocks
        slots = self._slot_map()
        thresholds = self.thresholds.active(model.name)
        loads = []
        for instance_id in model.instance_ids:
            slot = slots.get(instance_id)
            if slot is None:
                slot = self.slot(instance_id)  # new since the map was read (None: the indexer gave it no slot yet)
            blocks, prefill = self._load(slot)
            if thresholds is not None and self._busy(model, instance_id, thresholds, blocks, prefill):
                continue
            loads.append(WorkerLoad(instance_id, matches.get(slot, 0), blocks, prefill, cached.get(slot, 0)))
        if not loads:
            raise self._all_busy(model)
        weight = settings.overlap_weight if overlap_weight is None else overlap_weight
        chosen = select_worker(loads, isl=isl, block_size=model.block_size, overlap_weight=weight,
                               temperature=settings.temperature)
        return chosen.instance_id, chosen.overlap_blocks

    def _slot_map(self) -> dict[str, int]:
        """Worker instance -> index slot, read again from the index at most every ``SLOT_MAP_TTL_S``: a KV decision
        weighs every worker, and checking each one's slot every time costs more than the decision."""
        if time.monotonic() - self._slots_read_at >= SLOT_MAP_TTL_S:
            self._read_slot_map()
        return self._slots

    def _read_slot_map(self) -> None:
        self._slots = {worker_id: slot for slot, worker_id in self.index.slots()}
        self._slots_read_at = time.monotonic()

    @staticmethod
    def _busy(model: Candidate, instance_id: str, thresholds: BusyThresholds, blocks: int,
              prefill_tokens: int) -> bool:
        return thresholds.busy(blocks, model.total_kv_blocks.get(instance_id, 0), prefill_tokens,
                               model.max_batched_tokens.get(instance_id, 0))

    def _account(self, model: Candidate, instance_id: str, seq_hashes: Hashes, isl: int,
                 overlap: int, decode_only: bool = False) -> Route:
        block_size = model.block_size
        route = Route(instance_id, self.slot(instance_id), max(isl // block_size - overlap, 0),
                      0 if decode_only else max(isl - overlap * block_size, 0), overlap)
        if route.slot is not None:
            self.index.add_load(route.slot, 1, route.blocks, route.prefill_tokens)
        if self.settings.mode == "kv" and self.send_routed is not None and seq_hashes:
            self.send_routed(instance_id, seq_hashes)
        return route

    def first_token(self, route: Route) -> None:
        """The worker finished the prefill: its prefill tokens no longer count."""
        if route.prefill_tokens and self._owns(route):
            self.index.add_load(route.slot, 0, 0, -route.prefill_tokens)
        route.prefill_tokens = 0

    def finish(self, route: Route) -> None:
        """The request ended (any way): release everything it added."""
        if self._owns(route):
            self.index.add_load(route.slot, -1, -route.blocks, -route.prefill_tokens)
        route.slot = None

    def _owns(self, route: Route) -> bool:
        """The slot still belongs to the route's worker (it is reassigned when a worker leaves)."""
        return route.slot is not None and self.index.worker_id(route.slot) == route.instance_id

    def slot(self, instance_id: str) -> int | None:
        """The index slot of a worker instance, if the indexer gave it one."""
        if self.index is None:
            return None
        slot = self._slots.get(instance_id)
        if slot is None or self.index.worker_id(slot) != instance_id:
            self._read_slot_map()
            slot = self._slots.get(instance_id)
        return slot
