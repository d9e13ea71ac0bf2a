"""A scrape asks every live serving process for its live metrics over ipc, and falls back to the snapshot file
of a process that does not answer or has exited (frontend/observability/metrics.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from frontend.observability.metrics import Metrics, Snapshot, gather_snapshots, merge

REPO = Path(__file__).resolve().parents[2]
LABELS = (("model", "m"),)
KEY = ("requests_total", LABELS)
GAUGE = ("inflight_requests", LABELS)

# A serving process: its own Metrics, snapshot file and ipc server on its event loop, driven by stdin lines
# ("inc N", "write", "block S", "exit"); it answers each line with "ok" on stdout.
PEER = r"""
import asyncio, sys, time
import zmq
from frontend.observability import metrics as m

async def main(directory, interval):
    m.SNAPSHOT_INTERVAL_S = interval
    loop = asyncio.get_running_loop()
    context = zmq.Context()
    metrics = m.Metrics()
    writer = m.SnapshotWriter(loop, metrics, directory)
    server = m.SnapshotServer(loop, context, metrics, directory)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ok", flush=True)
    while words := (await reader.readline()).decode().split():
        if words[0] == "inc":
            metrics.inc("requests_total", (("model", "m"),), float(words[1]))
            metrics.add_gauge("inflight_requests", (("model", "m"),), 1)
        elif words[0] == "write":
            writer.write()
        elif words[0] == "exit":
            break
        print("ok", flush=True)
        if words[0] == "block":
            time.sleep(float(words[1]))  # the loop answers nothing meanwhile
    writer.close()
    server.close()
    context.term()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


class Peer:
    def __init__(self, directory: str, interval_s: float = 3600.0) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", PEER, directory, str(interval_s)], cwd=REPO,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.process.pid
        self._expect_ok()

    def _expect_ok(self) -> None:
        assert self.process.stdout.readline().strip() == "ok"

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        if line != "exit":
            self._expect_ok()

    def exit(self) -> None:
        self.send("exit")
        assert self.process.wait(timeout=10) == 0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def directory():
    # short: an ipc path must fit a unix socket address (~107 bytes)
    with tempfile.TemporaryDirectory(prefix="metrics-", dir="/tmp") as path:
        yield path


@pytest.fixture
def peers(directory):
    started: list[Peer] = []

    def start(**kwargs) -> Peer:
        peer = Peer(directory, **kwargs)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.kill()  # also closes its pipes


def scrape(directory: str, own: Metrics, timeout: float = 0.2) -> tuple[Metrics, list[Snapshot], float]:
    async def run() -> list[Snapshot]:
        context = zmq.Context()
        try:
            return await gather_snapshots(asyncio.get_running_loop(), context, directory, own, timeout)
        finally:
            context.term()

    started = time.perf_counter()
    snapshots = asyncio.run(run())
    return merge(snapshots), snapshots, time.perf_counter() - started


def test_a_scrape_right_after_an_inc_sees_it(directory, peers):
    first, second = peers(), peers()  # no periodic file: only their live answers can carry the counts
    own = Metrics()
    own.inc(*KEY)
    for round_ in range(1, 4):
        first.send("inc 1")
        second.send("inc 10")
        total, snapshots, elapsed = scrape(directory, own)
        assert total.counters[KEY] == 1 + 11 * round_
        assert total.gauges[GAUGE] == 2 * round_
        assert sorted(s.pid for s in snapshots) == sorted([os.getpid(), first.pid, second.pid])
        assert elapsed < 0.2  # nobody was waited for


def test_a_peer_that_does_not_answer_falls_back_to_its_file(directory, peers):
    answering, silent = peers(), peers()
    answering.send("inc 1")
    silent.send("inc 5")
    silent.send("write")  # its file says 5
    silent.send("inc 5")  # live: 10
    silent.send("block 2")
    total, snapshots, elapsed = scrape(directory, Metrics(), timeout=0.3)
    assert total.counters[KEY] == 1 + 5
    assert 0.3 <= elapsed < 1.5
    assert {s.pid for s in snapshots} == {os.getpid(), answering.pid, silent.pid}


def test_an_exited_peer_keeps_its_counters_and_drops_its_gauges(directory, peers):
    live, gone = peers(), peers()
    live.send("inc 1")
    gone.send("inc 3")
    gone.exit()  # its last file is written on close, its socket removed
    assert not os.path.exists(os.path.join(directory, f"{gone.pid}.sock"))
    assert os.path.exists(os.path.join(directory, f"{gone.pid}.msgpack"))
    total, _, elapsed = scrape(directory, Metrics())
    assert total.counters[KEY] == 4
    assert total.gauges[GAUGE] == 1  # the live peer's only
    assert elapsed < 0.2


def test_a_killed_peer_is_not_waited_for(directory, peers):
    """SIGKILL leaves the socket file behind; the dead pid is not asked."""
    peer = peers(interval_s=0.05)
    peer.send("inc 2")
    peer.send("write")
    peer.kill()
    assert os.path.exists(os.path.join(directory, f"{peer.pid}.sock"))
    total, _, elapsed = scrape(directory, Metrics())
    assert total.counters[KEY] == 2 and GAUGE not in total.gauges
    assert elapsed < 0.2
