"""Discovery through a real etcd (Debian's etcd-server, started here): two frontend daemons and mock workers
on etcd, a worker's lease expiring, a frontend going away, and etcd itself stopped for 10 s under load."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import openai
import pytest
from e2e_support import MODEL, Daemon, Mocker, wait_until
from etcd_support import EtcdServer, etcd_flags, etcd_mocker, needs_etcd, wait_etcd_down

pytestmark = needs_etcd

LEASE_TTL_S = 2.0
SECOND_MODEL = "tiny-b"


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def cluster(etcd):
    """Start daemons and workers on ``etcd``; all stopped after the test."""
    started: list[Daemon | Mocker] = []

    def daemon() -> Daemon:
        server = Daemon(*etcd_flags(etcd), mock_workers=0)
        started.append(server)
        return server.wait_ready()

    def worker(*extra: str) -> Mocker:
        started.append(etcd_mocker(etcd, *extra, lease_ttl_s=str(LEASE_TTL_S)))
        return started[-1]  # type: ignore[return-value]

    yield daemon, worker
    for process in reversed(started):
        process.close()


def instances(server: Daemon) -> list[str]:
    response = server.http.get("/health")
    return sorted(i["instance_id"] for i in response.json()["instances"]) if response.status_code == 200 else []


def discovery(server: Daemon) -> dict:
    return server.http.get("/health").json().get("discovery", {})


def wait_instances(servers: list[Daemon], count: int, timeout: float = 30.0) -> None:
    wait_until(lambda: all(len(instances(s)) == count for s in servers), timeout, f"{count} instances on every "
               "frontend", interval=0.05, on_timeout=lambda: "\n".join(s.describe() for s in servers))


def chat(server: Daemon, model: str = MODEL) -> str:
    with server.client() as client:
        reply = client.chat.completions.create(model=model, max_tokens=6,
                                               messages=[{"role": "user", "content": "hello"}])
    return reply.choices[0].message.content or ""


def test_two_frontends_serve_the_workers_registered_in_etcd(cluster):
    start_daemon, start_worker = cluster
    first, second = start_daemon(), start_daemon()
    doomed = start_worker()
    start_worker()
    start_worker("--model-name", SECOND_MODEL)
    wait_instances([first, second], 3)
    for server in (first, second):  # every HTTP process of each has the same table
        assert sorted(server.model_ids(fresh=True)) == [MODEL, SECOND_MODEL]
        assert discovery(server) == {"backend": "etcd", "connected": True}
        assert chat(server) and chat(server, SECOND_MODEL)
    assert "discovery_connected 1" in first.http.get("/metrics").text

    killed = time.monotonic()
    doomed.kill()  # SIGKILL: no unregister; its lease expires
    wait_instances([first, second], 2, timeout=LEASE_TTL_S + 8)
    gone_after = time.monotonic() - killed
    print(f"a SIGKILLed worker left both frontends' /health after {gone_after:.2f} s (lease TTL {LEASE_TTL_S} s)")
    assert gone_after < LEASE_TTL_S + 2.5

    first.stop()  # one frontend gone: the other goes on serving
    assert chat(second) and chat(second, SECOND_MODEL)
    assert len(instances(second)) == 2


def test_a_clean_stop_unregisters_at_once(cluster):
    start_daemon, start_worker = cluster
    server = start_daemon()
    worker = start_worker("--lease-ttl-s", "30")
    wait_instances([server], 1)
    stopped = time.monotonic()
    worker.stop()  # SIGTERM: the key is deleted and the lease revoked, no waiting for a 30 s lease
    wait_instances([server], 0, timeout=10)
    assert time.monotonic() - stopped < 10


def test_etcd_down_for_10_s_under_load_fails_no_request(etcd, cluster):
    start_daemon, start_worker = cluster
    loaded, other = start_daemon(), start_daemon()
    start_worker()
    start_worker()
    wait_instances([loaded, other], 2)
    results: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with loaded.client() as client:
            for _ in range(2000):  # bounded; ends when ``stop`` is set (about 14 s)
                if stop.is_set():
                    return
                try:
                    client.chat.completions.create(model=MODEL, max_tokens=8,
                                                   messages=[{"role": "user", "content": "tell me"}])
                    results.append("ok")
                except openai.APIError as exc:
                    results.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        etcd.stop()
        wait_etcd_down(etcd)
        down = time.monotonic()
        wait_until(lambda: discovery(loaded).get("connected") is False and discovery(other).get("connected") is False,
                   5, "both frontends to report etcd disconnected")
        print(f"etcd down: /health says connected false after {time.monotonic() - down:.2f} s")
        assert "discovery_connected 0" in loaded.http.get("/metrics").text
        while time.monotonic() - down < 10:  # the instances stay while etcd is away
            assert len(instances(loaded)) == 2 and len(instances(other)) == 2
            time.sleep(0.5)
        etcd.start()
        back = time.monotonic()
        wait_until(lambda: discovery(loaded).get("connected") and discovery(other).get("connected"), 15,
                   "both frontends to report etcd connected again")
        print(f"etcd back: connected true after {time.monotonic() - back:.2f} s")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    failures = [r for r in results if r != "ok"]
    print(f"{len(results)} requests during the outage, {len(failures)} failed")
    assert not failures, failures[:5]
    assert len(results) > 20
    assert len(instances(loaded)) == 2 and len(instances(other)) == 2  # the workers' leases survived

    start_worker("--model-name", SECOND_MODEL)  # registered after the restart: on both frontends
    wait_instances([loaded, other], 3)
    assert chat(loaded, SECOND_MODEL) and chat(other, SECOND_MODEL)
