"""Process helpers of the harness tests: free ports, readiness polling, stopping what a test started."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from frontend.transport.ports import port_for_later_bind

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free loopback port for a server started next, outside the ephemeral range (``frontend/transport/ports.py``)."""
    return port_for_later_bind("127.0.0.1")


def wait_for(url: str, process: subprocess.Popen, timeout: float = 30.0, needle: str = "") -> None:
    """Poll ``url`` until it answers 200 (containing ``needle``); fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200 and needle in response.text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process this test started, then SIGKILL it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
