"""When to send: closed-loop concurrency, open-loop request rate, and fixed-schedule trace replay.

* concurrency N: N virtual users; each takes the next session and sends its turns one after another, each
  turn as soon as the previous answer is complete (so at most N requests are in flight);
* request rate R: arrivals at constant 1/R intervals or Poisson (exponential gaps, mean 1/R) from the start;
  each arrival sends the next ready turn: a follow-up turn of a conversation whose previous answer is in,
  else the first turn of a new session. ``--concurrency`` together with a rate caps requests in flight;
* fixed schedule: each session's first turn at its trace timestamp from the start (later turns follow
  their answers).

A phase stops issuing at its request count or duration. In-flight requests are then awaited; when the
phase has a duration they get ``grace_s`` more seconds and are cancelled after it (their records say
``cancelled`` and are not counted). An arrival that is late (the loop was busy) is sent at once, so a
schedule catches up instead of drifting.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from time import perf_counter_ns

import msgspec

from .records import RequestRecord
from .workloads import Session

NS = 1_000_000_000
CONVERSATION_STRIDE = 1_000_000_000  # conversation ids of client process k start at k * stride


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """One client process's share of a phase."""

    phase: str = "profiling"
    request_count: int | None = None
    duration_s: float | None = None
    grace_s: float = 30.0
    concurrency: int | None = None
    request_rate: float | None = None
    rate_mode: str = "poisson"
    fixed_schedule: bool = False
    cycle: bool = True              # repeat the sessions when they run out
    seed: int = 0
    worker: int = 0
    first_arrival_s: float = 0.0    # constant-rate phase offset of this process
    start_ns: int | None = None     # common start time of all client processes


# send(session, turn, answers so far, conversation id, scheduled send time or None) -> record
Sender = Callable[[Session, int, list[str], int, "int | None"], Awaitable[RequestRecord]]


class Budget:
    """How many more requests a phase may issue, and until when."""

    def __init__(self, count: int | None, deadline_ns: int | None) -> None:
        self.remaining = count
        self.deadline_ns = deadline_ns

    def take(self) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.deadline_ns is not None and perf_counter_ns() >= self.deadline_ns:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


class SessionSource:
    """Hands out sessions in order, wrapping around when ``cycle``; numbers each pass as a conversation."""

    def __init__(self, sessions: list[Session], cycle: bool, worker: int) -> None:
        self.sessions = sessions
        self.cycle = cycle
        self.position = 0
        self.next_conversation = worker * CONVERSATION_STRIDE

    def next(self) -> tuple[Session, int] | None:
        if not self.sessions or (self.position >= len(self.sessions) and not self.cycle):
            return None
        session = self.sessions[self.position % len(self.sessions)]
        self.position += 1
        return session, self.conversation_id()

    def conversation_id(self) -> int:
        self.next_conversation += 1
        return self.next_conversation - 1


async def sleep_until(target_ns: int) -> None:
    """Sleep until ``target_ns``; loops because event-loop timers may fire up to a millisecond early."""
    while (delay := target_ns - perf_counter_ns()) > 0:
        await asyncio.sleep(delay / NS)


def arrival_gaps(plan: Plan) -> Callable[[], float]:
    """Seconds between arrivals: constant 1/R, or exponential with mean 1/R (Poisson process)."""
    assert plan.request_rate is not None
    rate = plan.request_rate
    if plan.rate_mode == "constant":
        return lambda: 1.0 / rate
    rng = random.Random(plan.seed * 7919 + plan.worker)
    return lambda: rng.expovariate(rate)


class Scheduler:
    """Runs one phase of one client process and returns its records."""

    def __init__(self, plan: Plan, sessions: list[Session], send: Sender) -> None:
        self.plan = plan
        self.source = SessionSource(sessions, plan.cycle, plan.worker)
        self.send = send
        self.tasks: set[asyncio.Task] = set()
        self.failure: BaseException | None = None  # first unexpected exception of a spawned task
        self.start_ns = 0
        self.budget = Budget(None, None)
        self.limit = asyncio.Semaphore(plan.concurrency) if plan.concurrency else None

    async def run(self) -> None:
        plan = self.plan
        self.start_ns = plan.start_ns or perf_counter_ns()
        await sleep_until(self.start_ns)
        deadline = self.start_ns + int(plan.duration_s * NS) if plan.duration_s else None
        self.budget = Budget(plan.request_count, deadline)
        if plan.fixed_schedule:
            await self.issue_fixed_schedule()
        elif plan.request_rate is not None:
            await self.issue_at_rate()
        else:
            await self.issue_closed_loop()
        await self.drain()

    async def conversation(self, session: Session, conversation: int, scheduled_ns: int | None) -> None:
        """Send the session's turns in order, each after the previous answer, while the budget allows.

        The caller has taken the budget for the first turn; later turns take their own.
        """
        answers: list[str] = []
        for turn in range(len(session.turns)):
            if turn > 0 and not self.budget.take():
                return
            record = await self.limited_send(session, turn, answers, conversation, scheduled_ns)
            if not record.ok:
                return  # the history is broken: the rest of the conversation is not sent
            answers.append(record.output_text)
            scheduled_ns = None

    async def limited_send(self, session: Session, turn: int, answers: list[str], conversation: int,
                           scheduled_ns: int | None) -> RequestRecord:
        if self.limit is None:
            return await self.send(session, turn, answers, conversation, scheduled_ns)
        async with self.limit:
            return await self.send(session, turn, answers, conversation, scheduled_ns)

    async def issue_closed_loop(self) -> None:
        async def user() -> None:
            while (taken := self.source.next()) is not None and self.budget.take():
                await self.conversation(*taken, scheduled_ns=None)

        self.limit = None  # the users themselves bound the concurrency
        users = [asyncio.ensure_future(user()) for _ in range(self.plan.concurrency or 1)]
        self.tasks.update(users)
        await asyncio.wait(users, timeout=self.remaining_s())

    async def issue_at_rate(self) -> None:
        """Open loop: one request per arrival; follow-up turns wait in ``ready`` for the next arrival."""
        ready: deque[tuple[Session, int, int, list[str]]] = deque()
        gap = arrival_gaps(self.plan)
        arrival = self.start_ns + int(self.plan.first_arrival_s * NS)
        while True:
            await sleep_until(arrival)
            item = ready.popleft() if ready else self.new_conversation()
            while item is None and self.tasks:  # only follow-up turns are left: wait for one
                await asyncio.wait(set(self.tasks), return_when=asyncio.FIRST_COMPLETED)
                item = ready.popleft() if ready else None
            if item is None or not self.budget.take():
                return
            self.spawn(self.rate_turn(item, ready))
            arrival += int(gap() * NS)

    def new_conversation(self) -> tuple[Session, int, int, list[str]] | None:
        taken = self.source.next()
        return None if taken is None else (taken[0], taken[1], 0, [])

    async def rate_turn(self, item: tuple[Session, int, int, list[str]], ready: deque) -> None:
        session, conversation, turn, answers = item
        record = await self.limited_send(session, turn, answers, conversation, None)
        if record.ok and turn + 1 < len(session.turns):
            ready.append((session, conversation, turn + 1, answers + [record.output_text]))

    async def issue_fixed_schedule(self) -> None:
        for session in sorted(self.source.sessions, key=lambda s: s.timestamp_ms or 0.0):
            target = self.start_ns + int((session.timestamp_ms or 0.0) * 1_000_000)
            await sleep_until(target)
            if not self.budget.take():
                return
            self.spawn(self.conversation(session, self.source.conversation_id(), target))

    def spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()

    def remaining_s(self) -> float | None:
        """Seconds until the duration and its grace period end (None without a duration)."""
        if self.budget.deadline_ns is None:
            return None
        end = self.budget.deadline_ns + int(self.plan.grace_s * NS)
        return max(0.0, (end - perf_counter_ns()) / NS)

    async def drain(self) -> None:
        """Wait for requests in flight; past the grace period cancel them."""
        pending = [task for task in self.tasks if not task.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.remaining_s())
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.failure = self.failure or task.exception()
        if self.failure is not None:
            raise self.failure  # a bug in the harness: request errors are records, not exceptions
