"""A worker's load reports (frontend/worker/load_publisher.py): on change, coalesced, republished."""

from __future__ import annotations

import asyncio
import time

import zmq

from frontend.protocol import load as wire
from frontend.protocol.load import LoadReport
from frontend.worker import load_publisher
from frontend.worker.load_publisher import LoadPublisher


def _received(sub: zmq.Socket, timeout_s: float) -> list[LoadReport]:
    reports, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sub.poll(20):
            reports.append(wire.decoder.decode(sub.recv()))
    return reports


def test_changes_are_sent_coalesced_and_the_latest_always_arrives():
    async def scenario() -> list[LoadReport]:
        context = zmq.Context()
        publisher = LoadPublisher(context)
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(publisher.endpoint)
        await asyncio.sleep(0.2)  # the subscription reaches the publisher
        publisher.start(asyncio.get_running_loop())
        publisher.report(1, 0, 10)
        for blocks in range(11, 111):  # a burst of engine steps
            publisher.report(1, 0, blocks)
        publisher.report(1, 0, 110)  # unchanged: nothing new
        await asyncio.sleep(load_publisher.MIN_INTERVAL_S * 3)
        reports = _received(sub, 0.1)
        publisher.close()
        sub.close(0)
        context.term()
        return reports

    reports = asyncio.run(scenario())
    assert reports[0] == LoadReport(1, 0, 10) and reports[-1] == LoadReport(1, 0, 110)
    assert len(reports) <= 3, reports  # the burst was coalesced


def test_the_last_report_is_republished_for_late_subscribers(monkeypatch):
    monkeypatch.setattr(load_publisher, "REPUBLISH_S", 0.1)

    async def scenario() -> list[LoadReport]:
        context = zmq.Context()
        publisher = LoadPublisher(context)
        publisher.start(asyncio.get_running_loop())
        publisher.report(2, 1, 7)  # nobody listens yet
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(publisher.endpoint)
        await asyncio.sleep(0.5)
        reports = _received(sub, 0.05)
        publisher.close()
        sub.close(0)
        context.term()
        return reports

    assert LoadReport(2, 1, 7) in asyncio.run(scenario())
