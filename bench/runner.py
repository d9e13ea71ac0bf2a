"""Run a profile: warm up, send the workload from one or more client processes, collect the records.

One client process is one asyncio event loop on uvloop with one pooled aiohttp session. With
``--workers N`` the parent builds the workload, splits it (sessions, request count, concurrency and rate)
into N shares and starts N spawned processes; all of them start sending at one agreed
``perf_counter_ns`` instant (CLOCK_MONOTONIC, shared by the processes of a machine), publish live counters
in shared memory, and send their records back as MessagePack. Warm-up requests always run in the parent
and are not recorded.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import time
from collections.abc import MutableSequence

import msgspec
import uvloop

from .client import Client
from .config import ProfileConfig
from .endpoints import request_body
from .progress import FIELDS, Counters, LiveProgress
from .records import RequestRecord
from .timing import Plan, Scheduler
from .workloads import Session, Workload

START_DELAY_S = 0.05       # from "all processes ready" to the first request
READY_TIMEOUT_S = 60.0


class ProcessResult(msgspec.Struct):
    """What one client process hands back."""

    worker: int
    records: list[RequestRecord]
    cpu_seconds: float
    wall_seconds: float


async def run_plan(config: ProfileConfig, plan: Plan, sessions: list[Session],
                   buffer: MutableSequence[float]) -> ProcessResult:
    """Run one plan in the current event loop; returns its records and the CPU time it used."""
    records: list[RequestRecord] = []
    counters = Counters(buffer, plan.worker)
    index = itertools.count()
    closed_loop = plan.request_rate is None and not plan.fixed_schedule
    connections = (plan.concurrency or 1) if closed_loop else 0  # 0: no limit (open loop)

    async with Client(config, connections=connections) as client:
        async def send(session: Session, turn: int, answers: list[str], conversation: int,
                       scheduled_ns: int | None) -> RequestRecord:
            record = RequestRecord(index=next(index), session=session.id, turn=turn, conversation=conversation,
                                   worker=plan.worker, start_ns=0, end_ns=0, scheduled_ns=scheduled_ns)
            try:
                return await client.send(request_body(config, session, turn, answers), record)
            finally:
                records.append(record)
                counters.add(record)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await Scheduler(plan, sessions, send).run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return ProcessResult(worker=plan.worker, records=records, cpu_seconds=cpu, wall_seconds=wall)


def base_plan(config: ProfileConfig, workload: Workload, phase: str) -> Plan:
    """The whole phase as one plan (before splitting across client processes)."""
    warmup = phase == "warmup"
    count = config.warmup_request_count if warmup else config.request_count
    if count is None and config.benchmark_duration is None:
        count = workload.request_total if workload.kind != "synthetic" else 10
    duration = None if warmup else config.benchmark_duration
    fixed = config.fixed_schedule and not warmup
    concurrency = config.concurrency
    if concurrency is None and config.request_rate is None and not fixed:
        concurrency = 1
    return Plan(phase=phase, request_count=count, duration_s=duration, grace_s=config.benchmark_grace_period,
                concurrency=concurrency, request_rate=config.request_rate, rate_mode=config.request_rate_mode,
                fixed_schedule=fixed, cycle=duration is not None or (count or 0) > workload.request_total,
                seed=config.random_seed)


def share(total: int | None, parts: int, k: int) -> int | None:
    """Part ``k`` of ``total`` split as evenly as possible into ``parts``."""
    if total is None:
        return None
    return total // parts + (1 if k < total % parts else 0)


def split_plan(plan: Plan, sessions: list[Session], workers: int) -> list[tuple[Plan, list[Session]]]:
    """One (plan, sessions) share per client process (the start instant is set when all are ready)."""
    shares = []
    for k in range(workers):
        rate = plan.request_rate / workers if plan.request_rate is not None else None
        offset = k / plan.request_rate if plan.request_rate and plan.rate_mode == "constant" else 0.0
        part = msgspec.structs.replace(plan, request_count=share(plan.request_count, workers, k),
                                       concurrency=share(plan.concurrency, workers, k), request_rate=rate,
                                       first_arrival_s=offset, worker=k)
        mine = sessions[k::workers]
        shares.append((part, mine if mine or not plan.cycle else sessions))
    return shares


def run_in_process(config: ProfileConfig, plan: Plan, sessions: list[Session],
                   progress: bool) -> list[ProcessResult]:
    """Run the plan on this process's event loop with a progress bar."""
    buffer: list[float] = [0.0] * FIELDS
    with LiveProgress(buffer, plan.request_count, plan.phase, progress):
        return [uvloop.run(run_plan(config, plan, sessions, buffer))]


def worker_main(payload: bytes, buffer: MutableSequence[float], ready: multiprocessing.synchronize.Barrier,
                start: multiprocessing.sharedctypes.Synchronized, results: multiprocessing.Queue) -> None:
    """Entry point of a spawned client process."""
    config, plan, sessions = msgspec.msgpack.decode(payload, type=tuple[ProfileConfig, Plan, list[Session]])
    ready.wait(READY_TIMEOUT_S)   # every process imported and decoded its share
    ready.wait(READY_TIMEOUT_S)   # the parent has set the start instant
    plan = msgspec.structs.replace(plan, start_ns=start.value)
    result = uvloop.run(run_plan(config, plan, sessions, buffer))
    results.put(msgspec.msgpack.encode(result))


def run_multi_process(config: ProfileConfig, plan: Plan, sessions: list[Session],
                      progress: bool) -> list[ProcessResult]:
    """Split the plan over ``config.workers`` spawned client processes and gather their results."""
    context = multiprocessing.get_context("spawn")
    workers = config.workers
    buffer = context.Array("d", FIELDS * workers, lock=False)
    ready = context.Barrier(workers + 1)
    start = context.Value("q", 0, lock=False)
    results = context.Queue()
    processes = []
    for part, part_sessions in split_plan(plan, sessions, workers):
        payload = msgspec.msgpack.encode((config, part, part_sessions))
        process = context.Process(target=worker_main, args=(payload, buffer, ready, start, results),
                                  name=f"bench-client-{part.worker}", daemon=True)
        process.start()
        processes.append(process)
    try:
        ready.wait(READY_TIMEOUT_S)
        start.value = time.perf_counter_ns() + int(START_DELAY_S * 1e9)
        ready.wait(READY_TIMEOUT_S)
        with LiveProgress(buffer, plan.request_count, plan.phase, progress):
            gathered = gather(results, processes)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return sorted(gathered, key=lambda result: result.worker)


def gather(results: multiprocessing.Queue, processes: list) -> list[ProcessResult]:
    """One result per process; raises if a process exits without sending one."""
    gathered: list[ProcessResult] = []
    while len(gathered) < len(processes):
        try:
            gathered.append(msgspec.msgpack.decode(results.get(timeout=1.0), type=ProcessResult))
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"client process {dead[0].name} exited with code {dead[0].exitcode}") from None
    return gathered


def run_phase(config: ProfileConfig, workload: Workload, phase: str) -> list[ProcessResult]:
    """Run the warm-up (always in this process) or the profiling phase (in ``--workers`` processes)."""
    plan = base_plan(config, workload, phase)
    if phase == "warmup" or config.workers == 1:
        return run_in_process(config, plan, workload.sessions, config.progress)
    return run_multi_process(config, plan, workload.sessions, config.progress)
