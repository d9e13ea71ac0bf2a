"""Process helpers for the end-to-end tests: start the real daemon and real mock workers, poll, stop.

Nothing here fakes a project component: the daemon is ``python -m frontend`` and a worker is
``python -m frontend.mocker``, both on 127.0.0.1 with free ports; tests talk to them over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import openai

from frontend.transport.ports import port_for_later_bind

REPO = Path(__file__).resolve().parents[2]
TINY_DIR = REPO / "config" / "models" / "tiny"
MODEL = "tiny"
EXTRA_MODELS = {"embedding": "tiny-embed", "images": "tiny-image", "videos": "tiny-video"}  # --mock-extra-models
FAST = "1000000"  # --speedup-ratio: no simulated delay
STOP_GRACE_S = 15.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this test run (a daemon's HTTP port and registry port picked
    one after the other must differ), drawn outside the kernel's ephemeral range: the process that binds it starts
    seconds later (a vLLM worker's status port, after its model loaded), and meanwhile any outgoing connection
    could take a port from that range (``frontend/transport/ports.py``)."""
    while True:
        port = port_for_later_bind("127.0.0.1")
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
               on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` seconds pass (then fail)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what} "
                                 f"(last error: {last_exc!r})\n{detail}")
        time.sleep(interval)


def _clean_env() -> dict[str, str]:
    """The test runner's environment without DYN_* settings, so that only the given flags apply."""
    return {key: value for key, value in os.environ.items() if not key.startswith("DYN_")}


class _Logged:
    """A child process whose stderr goes to a temp file (shown when a test fails)."""

    process: subprocess.Popen
    _log: Any

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None, cpus: set[int] | None = None) -> None:
        """Start ``argv``; ``cpus``: the CPUs it (and every process it starts) may run on."""
        self._log = tempfile.NamedTemporaryFile(prefix="e2e-", suffix=".log", delete=False)
        self.argv = argv
        self.process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**_clean_env(), **(env or {})},
                                        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self, limit: int = 12000) -> str:
        try:
            text = Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def describe(self) -> str:
        return f"--- {' '.join(self.argv[2:])} (exit {self.process.poll()}) log tail:\n{self.log_text()}"

    def kill(self) -> None:
        """SIGKILL the process (no clean unregister) and reap it."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_GRACE_S)

    def stop(self) -> int | None:
        """SIGTERM, wait up to 15 s, SIGKILL what is left of its process group, reap it."""
        process = self.process
        if process.returncode is not None:
            return process.returncode
        os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            try:  # WNOWAIT: an exited leader stays a zombie, so its pid (= the group id) cannot be reused yet
                if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    break
            except ChildProcessError:  # reaped elsewhere: its group id may already be someone else's
                return process.wait(STOP_GRACE_S)
            time.sleep(0.05)
        try:  # children of the process that did not exit with it (or the process itself, after 15 s)
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return process.wait(STOP_GRACE_S)

    def close(self) -> None:
        self.stop()
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass


class Daemon(_Logged):
    """``python -m frontend`` on 127.0.0.1 with its own HTTP port and registry endpoint.

    ``extra_models``: the daemon's ``--mock-extra-models`` (embedding, images, videos mock workers besides the
    chat model's); none by default, so that a test sees only the workers it asked for. ``api_key``: a key the
    daemon was given (``--api-key``...), sent by ``http``, ``client()`` and the readiness checks.
    """

    def __init__(self, *extra: str, mock_workers: int = 2, speedup: str = FAST, lease_ttl_s: str = "2",
                 env: dict[str, str] | None = None, extra_models: tuple[str, ...] = (),
                 api_key: str | None = None, model: str = MODEL) -> None:
        self.http_port = free_port()
        self.registry_port = free_port()
        self.registry_endpoint = f"tcp://127.0.0.1:{self.registry_port}"
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.mock_workers = mock_workers
        self.model = model  # the chat model the mock workers serve (--model-name / --mock-model-name)
        self.extra_models = [EXTRA_MODELS[kind] for kind in extra_models] if mock_workers else []
        argv = [sys.executable, "-m", "frontend", "--http-host", "127.0.0.1", "--http-port", str(self.http_port),
                "--registry-endpoint", self.registry_endpoint, "--workers", "1", "--tokenizer-workers", "1",
                "--mock-workers", str(mock_workers), "--mock-speedup-ratio", speedup, "--lease-ttl-s", lease_ttl_s,
                "--mock-extra-models", ",".join(extra_models) or "none", *extra]
        self._spawn(argv, env)
        self.api_key = api_key
        self.auth_headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0, headers=self.auth_headers)
        self.mockers: list[Mocker] = []

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("timeout", 60.0)
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key or "e2e", max_retries=0, **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("timeout", 60.0)
        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key=self.api_key or "e2e", max_retries=0,
                                  **kwargs)

    def model_ids(self, fresh: bool = False) -> list[str]:
        """The served models, as /v1/models lists them (on a new connection with ``fresh``)."""
        # fresh: the connection closes after the answer, so the next ask may reach another HTTP process
        response = self.http.get("/v1/models", headers={"connection": "close"} if fresh else None)
        response.raise_for_status()
        return [entry["id"] for entry in response.json()["data"]]

    def _check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"the daemon exited early\n{self.describe()}")

    def wait_ready(self, timeout: float = 30.0) -> "Daemon":
        def ready() -> bool:
            self._check_alive()
            if self.mock_workers == 0:
                return self.http.get("/live").status_code == 200
            health = self.http.get("/health")
            expected = self.mock_workers + len(self.extra_models)
            if health.status_code != 200 or len(health.json()["instances"]) < expected:
                return False
            # every HTTP process has its own model table: ask on fresh connections, which Granian spreads
            return all({self.model, *self.extra_models} <= set(self.model_ids(fresh=True)) for _ in range(6))

        wait_until(ready, timeout, "the daemon to become ready", interval=0.1, on_timeout=self.describe)
        return self

    def wait_model(self, name: str, present: bool = True, timeout: float = 20.0, instances: int = 1) -> float:
        """Wait until ``name`` is (or is no longer) in /v1/models; returns the seconds it took."""
        start = time.monotonic()

        def check() -> bool:
            self._check_alive()
            if not present:
                return name not in self.model_ids()
            if name not in self.model_ids():
                return False
            live = [i for i in self.http.get("/health").json()["instances"] if i["model"] == name]
            return len(live) >= instances

        wait_until(check, timeout, f"model {name!r} to {'appear' if present else 'disappear'}",
                   on_timeout=lambda: self.describe() + "".join("\n" + m.describe() for m in self.mockers))
        return time.monotonic() - start

    def counter(self, name: str, **labels: str) -> float:
        """The value of the daemon's counter ``dynamo_frontend_<name>`` with exactly these labels (0 when absent)."""
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in self.http.get("/metrics").text.splitlines():
            match = re.fullmatch(rf"dynamo_frontend_{name}\{{(.*)\}} (\S+)", line)
            if match and ",".join(sorted(match.group(1).split(","))) == wanted:
                return float(match.group(2))
        return 0.0

    def start_mocker(self, *extra: str, speedup: str = FAST, env: dict[str, str] | None = None) -> "Mocker":
        mocker = Mocker(self.registry_endpoint, *extra, speedup=speedup, env=env)
        self.mockers.append(mocker)
        return mocker

    def close(self) -> None:
        for mocker in self.mockers:
            mocker.close()
        self.http.close()
        super().close()


class Mocker(_Logged):
    """An external ``python -m frontend.mocker`` worker registering with a daemon's registry."""

    def __init__(self, registry_endpoint: str, *extra: str, speedup: str = FAST,
                 env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "frontend.mocker", "--registry-endpoint", registry_endpoint,
                "--speedup-ratio", speedup, *extra]
        self._spawn(argv, env)


def hang_up_after_sending(daemon: Daemon, path: str, body: dict, times: int = 3) -> None:
    """Send a POST ``times`` times on raw sockets and close each at once: a client gone before the first byte."""
    payload = json.dumps(body).encode()
    for _ in range(times):
        with socket.create_connection(("127.0.0.1", daemon.http_port)) as raw:
            raw.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)


def wait_routing_load_released(daemon: Daemon, model: str, what: str, timeout: float = 5.0) -> None:
    """Wait until the router's load counters of every instance of ``model`` are back to 0 (else fail)."""

    def released() -> bool:
        loads = [i["load"] for i in daemon.http.get("/health").json()["instances"] if i["model"] == model]
        return bool(loads) and all(load["active_requests"] == 0 and load["active_blocks"] == 0
                                   and load["active_prefill_tokens"] == 0 for load in loads)

    wait_until(released, timeout, f"the routing load of {what} to be released",
               on_timeout=lambda: str(daemon.http.get("/health").json()["instances"]))


def error_of(response: httpx.Response) -> dict:
    """The OpenAI error object of a response, checking its shape."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    return error


def sse_events(lines: list[str]) -> tuple[list[dict], bool]:
    """Decode SSE ``data:`` lines: (JSON events, whether ``[DONE]`` came last)."""
    import json

    events, done = [], False
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        assert not done, f"data after [DONE]: {data!r}"
        if data == "[DONE]":
            done = True
            continue
        events.append(json.loads(data))
    return events, done


class VllmWorker(_Logged):
    """An external ``python -m frontend.vllm`` worker (vLLM's CPU build) registering with a daemon's registry.

    ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) defaults to 1 here, so that several workers fit the test
    machine. ``cpus``: pin the worker and its engine core to these CPUs."""

    def __init__(self, registry_endpoint: str, model_dir: str, *extra: str, env: dict[str, str] | None = None,
                 cpus: set[int] | None = None) -> None:
        argv = [sys.executable, "-m", "frontend.vllm", "--model", model_dir, "--registry-endpoint", registry_endpoint,
                "--block-size", "32", "--max-model-len", "2048", "--dtype", "bfloat16", "--dyn-log-level", "info", *extra]
        self._spawn(argv, {"VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}, cpus)
