"""The daemon: start the registry, the tokenizer pool and mock workers, then serve HTTP with Granian.

Process tree (``ps`` titles in brackets)::

    python -m frontend            the supervisor; Granian's main loop runs in its main thread
    ├── [dyn-registry]            registry.server.run
    ├── [dyn-tokenizer] × M       tokenizer.server.run
    ├── [dyn-mocker] × N          python -m frontend.mocker (with --mock-workers), plus one per
    │                             --mock-extra-models type (embedding, images, videos models)
    └── [dyn-http] × W            Granian RSGI workers running frontend.http.app:app

Start-up waits for a READY message from the registry and every tokenizer process (with a timeout and a
liveness check). A watcher thread waits on the children's sentinels and restarts any that dies; a child
that dies more than ``CRASH_LOOP_LIMIT`` times within ``CRASH_LOOP_WINDOW_S`` stops the daemon. Children
get SIGTERM when the daemon exits (``PR_SET_PDEATHSIG``); a thread in each waits on the daemon's pidfd, sends its
main thread SIGTERM again (the first can be lost while it blocks in C) and ends it ``PARENT_GONE_GRACE_S``
later, so none outlives it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

import msgspec

from ..config.log_spec import root_level
from ..config.options import MOCK_EXTRA_MODELS
from ..config.sections import DiscoveryConfig, FrontendConfig, GeneralConfig, HttpConfig
from ..config.topology import Endpoints
from ..gateway.settings import SETTINGS_ENV, GatewaySettings
from ..observability.logs import setup_logging
from ..observability.tracing import ENABLED_ENV, sdk_missing
from ..protocol.errors import ConfigError, FrontendError
from ..stores.responses import prepare_response_store
from ..transport.process import die_with_parent, set_process_title, watch_parent
from .sdnotify import Notifier
from .tls import check_tls

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PARENT_GONE_GRACE_S = 5.0  # a child whose daemon died has this long for its finally blocks, then it is ended
CRASH_LOOP_LIMIT = 5
CRASH_LOOP_WINDOW_S = 60.0
EXIT_CHILD_CRASH_LOOP = 4

_spawn = multiprocessing.get_context("spawn")


class StartupError(FrontendError):
    """A child process did not become ready."""


def _child_main(title: str, log_level: str, log_format: str, target: Callable[..., None], args: tuple,
                parent: int) -> None:
    """A child process's entry: ``target(*args)``, then exit at once with its outcome (0, SystemExit's code, or 1
    after printing the error). Nothing runs after the target's own ``finally`` blocks: a finalizer that blocks
    (ZeroMQ's context waiting forever on a socket the SIGTERM interrupted while it was made) would leave the
    process behind its dead daemon."""
    die_with_parent(parent=parent)  # the daemon may have died while this child was still importing
    watch_parent(parent, PARENT_GONE_GRACE_S)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the daemon decides
    signal.signal(signal.SIGTERM, _exit_cleanly)  # run finally blocks (the indexer unlinks its shared memory)
    set_process_title(title)
    setup_logging(log_level, title, log_format)
    outcome: BaseException | None = None  # held to the end: freeing its frames could run a blocking finalizer
    try:
        target(*args)
    except BaseException as exc:
        outcome = exc
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late SIGTERM must not start the interpreter's own exit
    if outcome is not None and not isinstance(outcome, SystemExit):
        traceback.print_exception(outcome)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_exit_code(outcome))


def _exit_code(outcome: BaseException | None) -> int:
    """0 for a target that returned; SystemExit's code; 1 for an error."""
    if outcome is None:
        return 0
    if isinstance(outcome, SystemExit):
        return outcome.code if isinstance(outcome.code, int) else 0 if outcome.code is None else 1
    return 1


def _exit_cleanly(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a repeat (watch_parent's) must not cut the finally blocks
    raise SystemExit(0)


class Child:
    """One supervised child: how to start it, its current process, and its recent deaths."""

    def __init__(self, name: str, start: Callable[[], Any]) -> None:
        self.name = name
        self._start = start
        self.process: Any = None
        self.deaths: list[float] = []

    def start(self) -> None:
        self.process = self._start()

    @property
    def sentinel(self) -> Any:
        process = self.process
        return process.sentinel if isinstance(process, multiprocessing.process.BaseProcess) else _PopenSentinel(process)

    def alive(self) -> bool:
        process = self.process
        if isinstance(process, subprocess.Popen):
            return process.poll() is None
        return process.is_alive()

    def stop(self) -> None:
        process = self.process
        if process is None or not self.alive():
            return
        process.terminate()

    def join(self, timeout: float) -> None:
        process = self.process
        if process is None:
            return
        if isinstance(process, subprocess.Popen):
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        else:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join()


class _PopenSentinel:
    """A waitable for a subprocess.Popen child (pidfd on Linux)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._fd = os.pidfd_open(process.pid)

    def fileno(self) -> int:
        return self._fd


class Supervisor:
    """Owns every non-Granian child of the daemon."""

    def __init__(self, config: FrontendConfig) -> None:
        self.config = config
        self.own_run_dir = not config.general.run_dir
        self.run_dir = config.general.run_dir or tempfile.mkdtemp(prefix="dyn-frontend-")
        os.makedirs(self.run_dir, exist_ok=True)
        self.endpoints = Endpoints.derive(config.discovery.registry_endpoint, self.run_dir,
                                          config.preprocess.tokenizer_workers)
        # what every HTTP and gRPC server process is configured with (reads --api-key-file: may be a ConfigError)
        try:
            self.gateway = GatewaySettings.from_config(config, self.endpoints, self.run_dir)
        except BaseException:
            if self.own_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self.http_ready_dir = self.gateway.http_ready_dir
        self.draining_flag = self.gateway.draining_flag
        os.makedirs(self.http_ready_dir, exist_ok=True)
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.crash_loop = False

    # ---- start -------------------------------------------------------------------------------------------

    def start(self) -> None:
        from ..indexer import server as indexer_server
        from ..registry import server as registry_server
        from ..tokenizer import server as tokenizer_server

        config = self.config
        registry_args = (config.discovery.namespaces, config.discovery.lease_ttl_s, self.endpoints,
                         config.discovery.etcd)
        self._start_ready("registry", "dyn-registry", registry_server.run, (*registry_args, 0.0),
                          restart_args=(*registry_args, config.discovery.lease_ttl_s))
        self._start_ready("indexer", "dyn-indexer", indexer_server.run, (self.endpoints, config.router))
        for index, endpoint in enumerate(self.endpoints.tokenizers):
            self._start_ready(f"tokenizer-{index}", "dyn-tokenizer", tokenizer_server.run,
                              (index, endpoint, config.preprocess.fast_bpe))
        if config.kserve.kserve_grpc_server:  # KServe gRPC server processes (frontend/grpc/)
            from ..grpc import launch as grpc_launch

            grpc_args = (self.gateway, grpc_launch.GrpcSettings.from_config(config))
            for index in range(config.kserve.kserve_grpc_workers):
                self._start_ready(f"grpc-{index}", "dyn-grpc", grpc_launch.run, grpc_args)
        prefill = config.mocker.mock_prefill_workers
        for index in range(prefill + config.mocker.mock_workers):
            role = "prefill" if index < prefill else "decode" if prefill else "agg"
            child = Child(f"mocker-{index}", lambda role=role: self._mocker_command(role=role))
            child.start()
            self.children.append(child)
        for kind in config.mocker.extra_types:  # one embedding / images / videos model each, same model files
            child = Child(f"mocker-{kind}", lambda kind=kind: self._mocker_command(kind))
            child.start()
            self.children.append(child)
        threading.Thread(target=self._watch, name="child-watcher", daemon=True).start()

    def _start_ready(self, name: str, title: str, target: Callable[..., None], args: tuple,
                     restart_args: tuple | None = None) -> None:
        """Start a child process and wait for its READY; ``restart_args`` (if any) replace ``args`` when the
        watcher restarts it after a death."""
        def start() -> Any:
            receiver, sender = _spawn.Pipe(duplex=False)
            general = self.config.general
            chosen = restart_args if restart_args is not None and child.deaths else args
            process = _spawn.Process(target=_child_main, name=name, daemon=False,
                                     args=(title, general.log_level, general.log_format, target, (*chosen, sender),
                                           os.getpid()))
            process.start()
            sender.close()
            _await_ready(name, receiver, process)
            return process

        child = Child(name, start)
        child.start()
        self.children.append(child)

    def _mocker_command(self, extra_type: str | None = None, role: str = "agg") -> subprocess.Popen:
        """A mock worker of the chat model in ``role`` (agg, prefill, decode), or (``extra_type``) of that
        --mock-extra-models model."""
        discovery, mocker, general = self.config.discovery, self.config.mocker, self.config.general
        argv = [sys.executable, "-m", "frontend.mocker", "--exit-with-parent",
                "--registry-endpoint", discovery.registry_endpoint, "--namespace", discovery.worker_namespace,
                "--speedup-ratio", repr(mocker.mock_speedup_ratio),
                "--model-path", discovery.model_path or mocker.mock_model_path,
                "--log-level", general.log_level, "--log-format", general.log_format, "--disaggregation-mode", role]
        if extra_type is not None:
            argv += ["--model-name", MOCK_EXTRA_MODELS[extra_type], "--model-types", extra_type, "--kv-events", "off"]
        elif discovery.model_name or mocker.mock_model_name:
            argv += ["--model-name", discovery.model_name or mocker.mock_model_name]
        env = _mocker_env(general)
        if discovery.etcd is not None:
            argv += _etcd_flags(discovery)
            env = {**(env or os.environ), "DYN_MOCKER_ETCD_USERNAME": discovery.etcd_username,
                   "DYN_MOCKER_ETCD_PASSWORD": discovery.etcd_password}  # not in argv: ps shows that
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)

    # ---- watch and restart -------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self.stopping.is_set():
            by_sentinel = {}
            for child in self.children:
                try:
                    by_sentinel[child.sentinel] = child
                except OSError:
                    pass
            ready = wait(list(by_sentinel), timeout=1.0)
            if self.stopping.is_set():
                return
            for sentinel in ready:
                self._restart(by_sentinel[sentinel])

    def _restart(self, child: Child) -> None:
        now = time.monotonic()
        child.deaths = [t for t in child.deaths if now - t < CRASH_LOOP_WINDOW_S] + [now]
        if len(child.deaths) > CRASH_LOOP_LIMIT:
            log.error("child crash loop; stopping the daemon", extra={"child": child.name})
            self.crash_loop = True
            os.kill(os.getpid(), signal.SIGTERM)
            self.stopping.set()
            return
        log.warning("child died; restarting", extra={"child": child.name})
        try:
            child.start()
        except StartupError as exc:
            log.error("child restart failed", extra={"child": child.name, "error": str(exc)})

    def healthy(self) -> bool:
        """Every supervised child is running (what the systemd watchdog vouches for)."""
        return all(child.process is not None and child.alive() for child in self.children)

    def begin_shutdown(self) -> None:
        """From now on HTTP workers answer new requests with 503 while in-flight ones finish."""
        self.stopping.set()
        with open(self.draining_flag, "w"):
            pass

    # ---- stop --------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop children: mock workers first (they unregister), then tokenizers and the registry."""
        self.stopping.set()
        for child in reversed(self.children):
            child.stop()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in reversed(self.children):
            child.join(max(0.1, deadline - time.monotonic()))
        _unlink_shared_memory(self.endpoints.kv_index_name)  # in case the indexer was killed
        if self.own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _etcd_flags(discovery: DiscoveryConfig) -> list[str]:
    """A mock worker's flags to register in the daemon's etcd (the user and password go in its environment)."""
    argv = ["--discovery-backend", "etcd", "--etcd-endpoints", discovery.etcd_endpoints,
            "--lease-ttl-s", repr(discovery.lease_ttl_s)]
    for flag, path in (("--etcd-ca-path", discovery.etcd_ca_path), ("--etcd-cert-path", discovery.etcd_cert_path),
                       ("--etcd-key-path", discovery.etcd_key_path)):
        argv += [flag, path] if path else []
    return argv


def _mocker_env(general: GeneralConfig) -> dict[str, str] | None:
    """The mock workers' environment: the daemon's, with ``OTEL_EXPORT_ENABLED`` when the frontend traces (the
    option may come from the flag or the config file), so that their spans join the requests' traces."""
    return {**os.environ, ENABLED_ENV: "1"} if general.otel_export_enabled else None


def _unlink_shared_memory(name: str) -> None:
    try:
        os.unlink(os.path.join("/dev/shm", name.lstrip("/")))
    except OSError:
        pass


def _await_ready(name: str, receiver: Connection, process: multiprocessing.Process) -> None:
    ready = wait([receiver, process.sentinel], timeout=READY_TIMEOUT_S)
    if receiver in ready:
        try:
            if receiver.recv() == "ready":
                return
        except EOFError:
            pass
    process.kill()
    process.join()
    raise StartupError(f"{name} did not become ready within {READY_TIMEOUT_S:.0f} s "
                       f"(exit code {process.exitcode})")


def _granian(http: HttpConfig, general: GeneralConfig, tls: bool):
    from granian import Granian
    from granian.constants import Interfaces, Loops, SSLProtocols

    options: dict[str, Any] = {}
    if tls:
        options = {"ssl_cert": Path(http.tls_cert_path), "ssl_key": Path(http.tls_key_path),
                   "ssl_protocol_min": SSLProtocols.tls12 if http.tls_min_version == "1.2" else SSLProtocols.tls13}
        if http.tls_client_ca_path:
            options.update(ssl_ca=Path(http.tls_client_ca_path), ssl_client_verify=True)
    return Granian(
        "frontend.http.app:app", address=http.http_host, port=http.http_port,
        interface=Interfaces.RSGI, workers=http.workers, loop=Loops.uvloop,
        log_enabled=True, log_level=root_level(general.log_level), log_access=http.access_log,
        respawn_failed_workers=True, workers_kill_timeout=max(1, math.ceil(http.graceful_shutdown_timeout)),
        **options,
    )


def _announce(supervisor: Supervisor, notifier: Notifier) -> None:
    """Tell systemd READY=1 once every HTTP worker is up, then ping its watchdog until shutdown."""
    ready_dir, http = supervisor.http_ready_dir, supervisor.config.http
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not supervisor.stopping.is_set() and time.monotonic() < deadline:
        if len(os.listdir(ready_dir)) >= http.workers:
            notifier.ready(f"serving on {http.http_host}:{http.http_port}")
            log.info("ready", extra={"port": http.http_port})
            break
        time.sleep(0.05)
    while notifier.watchdog_interval_s and not supervisor.stopping.wait(notifier.watchdog_interval_s):
        if supervisor.healthy():
            notifier.watchdog()


def serve(config: FrontendConfig, ignored_flags: list[str] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code. ``ignored_flags``: NVIDIA Dynamo flags
    given that this daemon accepts and ignores (``config/dynamo_flags.py``), named in one warning."""
    setup_logging(config.general.log_level, "daemon", config.general.log_format)
    if ignored_flags:
        log.warning("ignoring NVIDIA Dynamo flags this frontend does not implement",
                    extra={"flags": "; ".join(ignored_flags)})
    tls = check_tls(config.http)
    problem = sdk_missing() if config.general.otel_export_enabled else None
    if problem is not None:
        raise ConfigError(f"--otel-export-enabled: {problem}")
    if config.parsers.responses_store:  # PostgreSQL: reachable, schema made (an error names the URL, no password)
        prepare_response_store(config.parsers.responses_store_url)
    notifier = Notifier()
    supervisor = Supervisor(config)
    try:
        supervisor.start()
        os.environ[SETTINGS_ENV] = msgspec.json.encode(supervisor.gateway).decode()
        server = _granian(config.http, config.general, tls)
        interrupt = server.signal_handler_interrupt

        def on_interrupt(*args: Any) -> None:  # children may get the same signal: don't restart them now
            supervisor.begin_shutdown()
            notifier.stopping()
            interrupt(*args)

        server.signal_handler_interrupt = on_interrupt
        threading.Thread(target=_announce, args=(supervisor, notifier), name="sd-notify", daemon=True).start()
        try:
            server.serve()
        except SystemExit as exc:
            return int(exc.code or 0)
    finally:
        supervisor.stop()
    return EXIT_CHILD_CRASH_LOOP if supervisor.crash_loop else 0
