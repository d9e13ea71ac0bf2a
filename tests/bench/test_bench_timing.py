"""Scheduling: concurrency bounds, arrival processes, fixed-schedule trace replay timing, duration limits."""

from __future__ import annotations

import asyncio
import json
import statistics
from time import perf_counter_ns

import pytest
import uvloop

from bench.config import ProfileConfig
from bench.records import RequestRecord
from bench.runner import split_plan
from bench.timing import Plan, Scheduler
from bench.trace import load_trace
from bench.workloads import Session, Turn

NS = 1e9


def sessions(count: int, turns: int = 1) -> list[Session]:
    return [Session(id=i, turns=[Turn(text=f"s{i}t{t}", tokens=1) for t in range(turns)]) for i in range(count)]


class FakeServer:
    """A ``send`` that takes ``latency_s`` and records what was sent when, and the peak in flight."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.sent: list[tuple[float, int, int, list[str], int | None]] = []
        self.in_flight = 0
        self.peak = 0
        self.cancelled = 0

    async def send(self, session, turn, answers, conversation, scheduled_ns) -> RequestRecord:
        self.sent.append((perf_counter_ns() / NS, session.id, turn, list(answers), scheduled_ns))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        return RequestRecord(index=len(self.sent), session=session.id, turn=turn, conversation=conversation,
                             start_ns=0, end_ns=0, output_text=f"answer {session.id}.{turn}")


def run(plan: Plan, work: list[Session], server: FakeServer) -> None:
    uvloop.run(Scheduler(plan, work, server.send).run())


def test_concurrency_bounds_requests_in_flight_and_count_is_exact():
    server = FakeServer(latency_s=0.01)
    run(Plan(concurrency=4, request_count=30), sessions(10), server)
    assert len(server.sent) == 30 and server.peak == 4
    assert [s[1] for s in server.sent[:12]] == list(range(10)) + [0, 1]  # the dataset wraps around


def test_multi_turn_sessions_send_turns_in_order_with_the_answers_so_far():
    server = FakeServer(latency_s=0.002)
    run(Plan(concurrency=2, request_count=9, cycle=False), sessions(3, turns=3), server)
    assert len(server.sent) == 9
    for session in range(3):
        mine = [s for s in server.sent if s[1] == session]
        assert [s[2] for s in mine] == [0, 1, 2]
        assert mine[2][3] == [f"answer {session}.0", f"answer {session}.1"]
        assert mine[0][0] < mine[1][0] < mine[2][0]


def test_open_loop_sends_follow_up_turns_after_their_answers():
    server = FakeServer(latency_s=0.03)  # longer than the arrival gap: follow-ups wait for answers
    run(Plan(request_rate=200.0, rate_mode="constant", request_count=6, cycle=False), sessions(2, turns=3), server)
    assert sorted((s[1], s[2]) for s in server.sent) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    for session in range(2):
        mine = [s for s in server.sent if s[1] == session]
        assert [s[2] for s in mine] == [0, 1, 2] and mine[2][3] == [f"answer {session}.0", f"answer {session}.1"]
        assert mine[1][0] - mine[0][0] >= 0.028  # event-loop timers may fire up to 1 ms early


def test_constant_rate_spaces_arrivals_evenly():
    server = FakeServer()
    run(Plan(request_rate=100.0, rate_mode="constant", request_count=21), sessions(5), server)
    gaps = [b[0] - a[0] for a, b in zip(server.sent, server.sent[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.01, rel=0.1)  # a late arrival is caught up at once
    assert statistics.median(gaps) == pytest.approx(0.01, abs=0.002)


def test_poisson_rate_has_exponential_gaps_with_the_right_mean():
    server = FakeServer()
    run(Plan(request_rate=400.0, rate_mode="poisson", request_count=201, seed=3), sessions(5), server)
    gaps = [b[0] - a[0] for a, b in zip(server.sent, server.sent[1:])]
    assert statistics.mean(gaps) == pytest.approx(1 / 400, rel=0.25)
    assert statistics.stdev(gaps) > 0.5 * statistics.mean(gaps)  # exponential: stdev ~ mean (constant: ~0)


def test_rate_with_concurrency_cap():
    server = FakeServer(latency_s=0.05)
    run(Plan(request_rate=500.0, rate_mode="constant", concurrency=3, request_count=12), sessions(4), server)
    assert len(server.sent) == 12 and server.peak == 3


def test_duration_stops_issuing_and_grace_period_cancels_stragglers():
    server = FakeServer(latency_s=5.0)
    started = perf_counter_ns()
    run(Plan(concurrency=3, duration_s=0.2, grace_s=0.1), sessions(5), server)
    assert (perf_counter_ns() - started) / NS < 1.5
    assert len(server.sent) == 3 and server.cancelled == 3


def test_fixed_schedule_replays_trace_timestamps(prompts, tmp_path):
    offsets_ms = [0, 40, 45, 150, 300, 310]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 5000 + t, "input_length": 16, "output_length": 2}) + "\n"
                             for t in offsets_ms))
    work = load_trace(trace, prompts, ProfileConfig(model="tiny", input_file=str(trace), fixed_schedule=True))
    server = FakeServer(latency_s=0.1)  # longer than some gaps: replay must not wait for answers
    start = perf_counter_ns() + 50_000_000
    run(Plan(fixed_schedule=True, start_ns=start, cycle=False), work.sessions, server)
    sent_ms = [(t * NS - start) / 1e6 for t, *_ in server.sent]
    assert len(sent_ms) == len(offsets_ms)
    for actual, wanted in zip(sent_ms, offsets_ms):
        assert wanted - 0.01 <= actual <= wanted + 30  # never early; late only by event-loop delay
    assert [s[4] for s in server.sent] == [start + t * 1_000_000 for t in offsets_ms]


def test_split_plan_shares_count_concurrency_rate_and_sessions():
    plan = Plan(concurrency=5, request_count=11, request_rate=9.0, rate_mode="constant", cycle=True)
    shares = split_plan(plan, sessions(4), 3)
    assert [p.request_count for p, _ in shares] == [4, 4, 3]
    assert [p.concurrency for p, _ in shares] == [2, 2, 1]
    assert [p.request_rate for p, _ in shares] == [3.0, 3.0, 3.0]
    assert [p.first_arrival_s for p, _ in shares] == pytest.approx([0, 1 / 9, 2 / 9])
    assert [[s.id for s in part] for _, part in shares] == [[0, 3], [1], [2]]
    assert [p.worker for p, _ in shares] == [0, 1, 2]
