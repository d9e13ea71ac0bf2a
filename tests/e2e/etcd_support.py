"""A real etcd server for the tests (Debian's ``etcd-server``, v3.4 flags), on loopback ports of its own.

``EtcdServer`` starts ``etcd`` on a temporary data directory and can stop and start it again on the same data
(the same cluster, the same revisions), so a test can take discovery away for a while. Tests that need it are
skipped where no ``etcd`` binary is installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from e2e_support import FAST, Mocker, free_port, wait_until

ETCD = shutil.which("etcd")
# CI sets FRONTEND_REQUIRE_ETCD=1 (.ci/run installs etcd-server): there a missing binary fails the tests, never skips
needs_etcd = pytest.mark.skipif(ETCD is None and not os.environ.get("FRONTEND_REQUIRE_ETCD"),
                                reason="needs the etcd binary (apt-get install etcd-server)")


class EtcdServer:
    """One etcd member on 127.0.0.1: ``endpoint`` is its client URL (``http://127.0.0.1:PORT``). With ``certs``
    (a directory made by ``scripts/gen-certs``: ca.pem, server.pem/key, client.pem/key) the client URL is https
    and clients must present a certificate the CA signed."""

    def __init__(self, certs: Path | None = None) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="etcd-e2e-")
        self.client_port, self.peer_port = free_port(), free_port()
        self.certs = certs
        self.endpoint = f"{'https' if certs else 'http'}://127.0.0.1:{self.client_port}"
        self._log_path = Path(self.data_dir + ".log")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "EtcdServer":
        """Start etcd (again, on the same data) and wait until it answers /health."""
        assert ETCD is not None, "no etcd binary: apt-get install etcd-server"
        assert self.process is None
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [ETCD, "--name", "default", "--data-dir", self.data_dir,
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"default={peer}", "--log-level", "warn", "--logger", "zap"]
        if self.certs is not None:
            argv += ["--cert-file", str(self.certs / "server.pem"), "--key-file", str(self.certs / "server.key"),
                     "--trusted-ca-file", str(self.certs / "ca.pem"), "--client-cert-auth"]
        with open(self._log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until(self._healthy, timeout, "etcd to answer /health", interval=0.1, on_timeout=self.log_text)
        return self

    def _healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"etcd exited\n{self.log_text()}")
        return httpx.get(self.endpoint + "/health", timeout=1.0, **self.httpx_tls()).json().get("health") == "true"

    def httpx_tls(self) -> dict:
        """httpx's arguments to reach this etcd (its CA and the client certificate)."""
        if self.certs is None:
            return {}
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        context.load_cert_chain(str(self.certs / "client.pem"), str(self.certs / "client.key"))
        return {"verify": context}

    def stop(self) -> None:
        """SIGTERM etcd (its data stays) and reap it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

    def log_text(self, limit: int = 8000) -> str:
        try:
            return "--- etcd log tail:\n" + self._log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._log_path.unlink(missing_ok=True)


def wait_etcd_down(server: EtcdServer, timeout: float = 5.0) -> None:
    """Wait until nothing answers on ``server``'s client port."""
    def down() -> bool:
        try:
            httpx.get(server.endpoint + "/health", timeout=0.5, **server.httpx_tls())
        except httpx.HTTPError:
            return True
        return False

    deadline = time.monotonic() + timeout
    while not down():
        assert time.monotonic() < deadline, "etcd still answers"
        time.sleep(0.05)


def etcd_flags(server: EtcdServer) -> list[str]:
    """A daemon's or worker's flags to discover through ``server``."""
    return ["--discovery-backend", "etcd", "--etcd-endpoints", server.endpoint]


def etcd_mocker(server: EtcdServer, *extra: str, lease_ttl_s: str = "2", speedup: str = FAST) -> Mocker:
    """A mock worker registering in ``server`` with a short lease (its --registry-endpoint is not used)."""
    return Mocker("tcp://127.0.0.1:9", *etcd_flags(server), "--lease-ttl-s", lease_ttl_s, *extra, speedup=speedup)
