"""Discovery through a real etcd (Debian's etcd-server, started here): two frontend daemons and mock workers
on etcd, a worker's lease expiring, a frontend going away, and etcd itself stopped for 10 s under load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Iterator

import openai
import pytest
from e2e_support import MODEL, REPO, Daemon, Mocker, wait_until
from etcd_support import EtcdServer, etcd_flags, etcd_mocker, needs_etcd, wait_etcd_down

from frontend.config.etcd_settings import EtcdSettings
from frontend.transport.etcd_client import open_client

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
    # a model that appears is loaded in a thread before it is listed: every HTTP process of each lists both
    wait_until(lambda: all(sorted(server.model_ids(fresh=True)) == [MODEL, SECOND_MODEL] for server in (first, second)
                           for _ in range(4)), 20, "both models on both frontends")
    for server in (first, second):
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
    start_worker("--lease-ttl-s", "5")  # a lease longer than a busy machine's pauses (renewed every 1.7 s)
    start_worker("--lease-ttl-s", "5")
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
    wait_until(lambda: all(SECOND_MODEL in server.model_ids() for server in (loaded, other)), 20,
               f"{SECOND_MODEL} listed on both frontends")
    assert chat(loaded, SECOND_MODEL) and chat(other, SECOND_MODEL)


async def _leases(settings: EtcdSettings, revoke: bool = False) -> set[int]:
    """The ids of etcd's live leases (revoked first with ``revoke``: their keys go with them)."""
    client = await open_client(settings)
    try:
        ids = {lease.ID for lease in (await client.lease.leases(timeout=5)).leases}
        for lease_id in ids if revoke else ():
            await client.lease.revoke(lease_id, timeout=5)
        return set() if revoke else ids
    finally:
        await client.close()


def test_a_worker_whose_lease_is_gone_registers_again(etcd, cluster):
    start_daemon, start_worker = cluster
    server = start_daemon()
    start_worker()
    wait_instances([server], 1)
    settings = EtcdSettings(endpoints=etcd.endpoint)
    old = asyncio.run(_leases(settings))
    asyncio.run(_leases(settings, revoke=True))  # as if etcd had been away for longer than the lease
    wait_until(lambda: asyncio.run(_leases(settings)) - old, 10, "a new lease")
    wait_instances([server], 1, timeout=10)
    assert chat(server)


async def _enable_auth(settings: EtcdSettings, password: str) -> None:
    client = await open_client(settings)
    try:
        await client.auth.user_add("root", password, timeout=5)
        await client.auth.user_grant_role("root", "root", timeout=5)
        await client.auth.auth_enable(timeout=5)
    finally:
        await client.close()


def test_mutual_tls_and_an_etcd_user(tmp_path):
    certs = tmp_path / "certs"
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen-certs"), str(certs)], check=True, timeout=60,
                   capture_output=True)
    files = {"ca_path": str(certs / "ca.pem"), "cert_path": str(certs / "client.pem"),
             "key_path": str(certs / "client.key")}
    tls_flags = [f"--etcd-{name.replace('_', '-')}" if i % 2 == 0 else value
                 for name, value in files.items() for i in (0, 1)]
    etcd = EtcdServer(certs).start()
    server = refused = None
    try:
        asyncio.run(_enable_auth(EtcdSettings(endpoints=etcd.endpoint, **files), "etcd-pw-1"))
        # the built-in mock worker gets the daemon's etcd flags, and the user and password in its environment
        server = Daemon(*etcd_flags(etcd), *tls_flags, mock_workers=1,
                        env={"ETCD_USERNAME": "root", "ETCD_PASSWORD": "etcd-pw-1"}).wait_ready(60)
        assert discovery(server) == {"backend": "etcd", "connected": True} and chat(server)
        refused = etcd_mocker(etcd, *tls_flags, "--model-name", SECOND_MODEL)  # no user: etcd refuses it
        assert refused.process.wait(30) == 3, refused.describe()
        assert "etcd-pw-1" not in server.log_text() + refused.log_text()
    finally:
        for process in (refused, server):
            if process is not None:
                process.close()
        etcd.close()
