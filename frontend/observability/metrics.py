"""Prometheus metrics, cheap on the hot path and aggregated exactly across every serving process.

Each serving process (Granian worker, gRPC server) records into its own in-memory :class:`Metrics`: a
counter increment is a dict update, a histogram observation one ``bisect``; nothing else happens per request.

A scrape of ``/metrics``, answered by whichever process receives it, is exact: every serving process binds a
ZeroMQ ROUTER on ``ipc://<run dir>/metrics/<pid>.sock`` (:class:`SnapshotServer`, drained from its event loop),
and the scraping process asks every live peer for its live :class:`Snapshot` at once, awaiting the answers
for at most ``SCRAPE_TIMEOUT_S`` without blocking its loop (:func:`gather_snapshots`), then merges them with
its own live values and renders Prometheus text.

Once a second every process also writes its snapshot to ``<run dir>/metrics/<pid>.msgpack`` (atomically, by
rename; and a last time when it closes). A scrape uses that file for a peer that did not answer in time (at
most a second old) and for a process that has exited: counters and histograms of exited processes are kept
(counters never go down); their gauges are dropped.

Names follow NVIDIA Dynamo's frontend (``--metrics-prefix``, default ``dynamo_frontend``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from bisect import bisect_left
from contextvars import ContextVar
from typing import Iterable

import msgspec
import zmq

from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer

Labels = tuple[tuple[str, str], ...]

SNAPSHOT_INTERVAL_S = 1.0
SCRAPE_TIMEOUT_S = 0.2  # how long a scrape waits for the live answers of the other processes, all together
SNAPSHOT_REQUEST = b"snapshot"

log = logging.getLogger(__name__)


def log_buckets(low: float, high: float, count: int) -> tuple[float, ...]:
    """``count`` upper bounds spaced evenly in log scale from ``low`` to ``high``."""
    ratio = (high / low) ** (1 / (count - 1))
    return tuple(float(f"{low * ratio ** i:.6g}") for i in range(count))


HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "request_duration_seconds": ("Time from request to the last byte of the response.", log_buckets(0.01, 512, 14)),
    "time_to_first_token_seconds": ("Time from request to the first generated token.", log_buckets(0.001, 480, 18)),
    "inter_token_latency_seconds": ("Time between generated tokens.", log_buckets(0.0005, 2, 13)),
    "input_sequence_tokens": ("Prompt length in tokens.", log_buckets(10, 128000, 12)),
    "output_sequence_tokens": ("Generated tokens per request.", log_buckets(1, 32000, 12)),
    "cached_tokens": ("Prompt tokens the worker found in its prefix cache.", log_buckets(10, 128000, 12)),
    "tokenizer_latency_ms": ("Chat template + tokenization time, milliseconds.", log_buckets(0.05, 1000, 12)),
}
COUNTERS: dict[str, str] = {
    "requests_total": "Requests by model, endpoint, type (stream|unary), status (success|error) and error type.",
    "output_tokens_total": "Generated tokens.",
    "model_cancellation_total": "Requests whose client went away before the end.",
    "disconnected_clients": "Clients that disconnected during a request.",
    "model_migration_total": "Requests moved to another worker mid-generation, by reason.",
    "http_stream_stalls_total": "Streams that stopped taking tokens because the client read too slowly, by outcome "
                                "(caught_up, aborted, client_gone).",
}
GAUGES: dict[str, str] = {
    "inflight_requests": "Requests being served.",
    "queued_requests": "Requests waiting for their first token.",
}


class Snapshot(msgspec.Struct, array_like=True):
    """What one process has recorded: (name, labels) -> value / histogram state."""

    pid: int
    counters: list[tuple[str, Labels, float]]
    gauges: list[tuple[str, Labels, float]]
    histograms: list[tuple[str, Labels, list[int], float]]  # bucket counts (+Inf last), sum


class Metrics:
    """The recorder of one process."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], float] = {}
        self.gauges: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], list] = {}  # [counts..., +Inf count, sum]

    def inc(self, name: str, labels: Labels, value: float = 1.0) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def add_gauge(self, name: str, labels: Labels, value: float) -> None:
        key = (name, labels)
        self.gauges[key] = self.gauges.get(key, 0.0) + value

    def observe(self, name: str, labels: Labels, value: float, count: int = 1) -> None:
        """Record ``count`` observations of ``value``."""
        key = (name, labels)
        state = self.histograms.get(key)
        bounds = HISTOGRAMS[name][1]
        if state is None:
            state = self.histograms[key] = [0] * (len(bounds) + 1) + [0.0]
        state[bisect_left(bounds, value)] += count
        state[-1] += value * count

    def snapshot(self) -> Snapshot:
        return Snapshot(
            os.getpid(),
            [(name, labels, value) for (name, labels), value in self.counters.items()],
            [(name, labels, value) for (name, labels), value in self.gauges.items()],
            [(name, labels, list(state[:-1]), state[-1]) for (name, labels), state in self.histograms.items()],
        )


# ---- one request ---------------------------------------------------------------------------------------


class RequestRecord:
    """What is known about the request being served; the front door records ``requests_total`` from it.

    The HTTP app (or gRPC servicer) creates one per request and makes it current; the generation fills in
    the model and type, and marks errors and cancellations.
    """

    __slots__ = ("endpoint", "model", "stream", "started", "error_type")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.model = ""
        self.stream = False
        self.started = time.perf_counter()
        self.error_type: str | None = None

    def record(self, metrics: "Metrics") -> None:
        labels = (("model", self.model), ("endpoint", self.endpoint),
                  ("request_type", "stream" if self.stream else "unary"),
                  ("status", "error" if self.error_type else "success"), ("error_type", self.error_type or ""))
        metrics.inc("requests_total", labels)


CURRENT_REQUEST: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)


class GenerationObserver:
    """Records one generation's timing and token counts (gauges, TTFT, ITL, lengths, cancellations)."""

    __slots__ = ("metrics", "record", "labels", "started", "last_token_at", "first_token_seen")

    def __init__(self, metrics: "Metrics", model: str, stream: bool) -> None:
        record = CURRENT_REQUEST.get()
        if record is None:
            record = RequestRecord("unknown")
        record.model, record.stream = model, stream
        self.metrics = metrics
        self.record = record
        self.labels: Labels = (("model", model),)
        self.started = record.started
        self.last_token_at = 0.0
        self.first_token_seen = False
        metrics.add_gauge("inflight_requests", self.labels, 1)
        metrics.add_gauge("queued_requests", self.labels, 1)

    def tokens(self, count: int) -> None:
        """``count`` new tokens arrived now."""
        now = time.perf_counter()
        metrics = self.metrics
        if not self.first_token_seen:
            self.first_token_seen = True
            metrics.add_gauge("queued_requests", self.labels, -1)
            metrics.observe("time_to_first_token_seconds", self.labels, now - self.started)
            count -= 1
        if count > 0:
            metrics.observe("inter_token_latency_seconds", self.labels, (now - self.last_token_at) / count, count)
        self.last_token_at = now

    def finished(self, prompt_tokens: int, output_tokens: int, cached_tokens: int, *, cancelled: bool,
                 error: bool) -> None:
        metrics, labels = self.metrics, self.labels
        metrics.add_gauge("inflight_requests", labels, -1)
        if not self.first_token_seen:
            metrics.add_gauge("queued_requests", labels, -1)
        metrics.observe("request_duration_seconds", labels, time.perf_counter() - self.started)
        metrics.observe("input_sequence_tokens", labels, prompt_tokens)
        metrics.observe("output_sequence_tokens", labels, output_tokens)
        if cached_tokens:
            metrics.observe("cached_tokens", labels, cached_tokens)
        metrics.inc("output_tokens_total", labels, output_tokens)
        if cancelled:
            self.record.error_type = "cancelled"
            request_type = "stream" if self.record.stream else "unary"
            metrics.inc("model_cancellation_total", (("model", self.record.model), ("endpoint", self.record.endpoint),
                                                     ("request_type", request_type)))
            metrics.inc("disconnected_clients", ())
        elif error:
            self.record.error_type = "backend_error"

ERROR_TYPES = {400: "validation", 404: "not_found", 405: "validation", 413: "validation", 500: "internal",
               502: "backend_error", 503: "unavailable", 529: "overload"}


def error_type_for(status: int) -> str:
    """Dynamo's error_type label for an HTTP status."""
    return ERROR_TYPES.get(status, "internal")


# ---- sharing between processes -------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


class SnapshotWriter:
    """Writes this process's snapshot to the shared directory every second."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics, directory: str) -> None:
        self.loop = loop
        self.metrics = metrics
        self.directory = directory
        self.path = os.path.join(directory, f"{os.getpid()}.msgpack")
        os.makedirs(directory, exist_ok=True)
        self._handle = loop.call_later(SNAPSHOT_INTERVAL_S, self._tick)

    def _tick(self) -> None:
        self.write()
        self._handle = self.loop.call_later(SNAPSHOT_INTERVAL_S, self._tick)

    def write(self) -> None:
        temporary = self.path + ".tmp"
        with open(temporary, "wb") as handle:
            handle.write(_encoder.encode(self.metrics.snapshot()))
        os.replace(temporary, self.path)

    def close(self) -> None:
        self._handle.cancel()
        self.write()  # the final counters of this process stay in the total


def socket_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{pid}.sock")


class SnapshotServer:
    """Answers every snapshot request on ``ipc://<directory>/<pid>.sock`` with this process's live values."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, metrics: Metrics,
                 directory: str) -> None:
        self.metrics = metrics
        self.path = socket_path(directory, os.getpid())
        self._drainer: SocketDrainer | None = None
        os.makedirs(directory, exist_ok=True)
        try:
            if os.path.exists(self.path):
                os.unlink(self.path)  # left by an earlier process with this pid
            sock = open_socket(context, zmq.ROUTER, bind=f"ipc://{self.path}")
        except (OSError, zmq.ZMQError) as error:  # e.g. a path too long for a unix socket
            log.warning("metrics: cannot bind %s (%s); scrapes use this process's snapshot file", self.path, error)
            return
        self._sock = sock
        self._drainer = SocketDrainer(loop, sock, self._on_request)

    def _on_request(self, frames: list[bytes]) -> None:
        # the drain loop reads again after this send, so the descriptor's edge cannot be lost here
        try:
            self._sock.send_multipart([*frames[:-1], _encoder.encode(self.metrics.snapshot())], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the asker is gone

    def close(self) -> None:
        if self._drainer is None:
            return
        self._drainer.close()
        self._drainer = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


async def gather_snapshots(loop: asyncio.AbstractEventLoop, context: zmq.Context, directory: str, own: Metrics,
                           timeout: float = SCRAPE_TIMEOUT_S) -> list[Snapshot]:
    """This process's live values, every live peer's answer, and the last snapshot file of every other process
    (peers that did not answer within ``timeout``, processes that have exited)."""
    me = os.getpid()
    files: dict[int, str] = {}
    peers: list[int] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        names = []
    for name in names:
        stem, extension = os.path.splitext(name)
        if not stem.isdigit() or int(stem) == me:
            continue
        if extension == ".msgpack":
            files[int(stem)] = os.path.join(directory, name)
        elif extension == ".sock" and _alive(int(stem)):
            peers.append(int(stem))
    answers = await _ask(loop, context, directory, peers, timeout) if peers else {}
    snapshots = [own.snapshot(), *answers.values()]
    for pid, path in files.items():
        if pid in answers:
            continue
        try:
            with open(path, "rb") as handle:
                snapshots.append(_decoder.decode(handle.read()))
        except (OSError, msgspec.DecodeError):
            continue
    return snapshots


async def _ask(loop: asyncio.AbstractEventLoop, context: zmq.Context, directory: str, peers: list[int],
               timeout: float) -> dict[int, Snapshot]:
    """Ask every peer at once (a DEALER each, for this scrape only); the answers that came within ``timeout``."""
    replies: dict[int, asyncio.Future[bytes]] = {}
    drainers = []
    try:
        for pid in peers:
            future = replies[pid] = loop.create_future()
            sock = open_socket(context, zmq.DEALER, connect=f"ipc://{socket_path(directory, pid)}")
            reader = SocketDrainer(loop, sock,
                                   lambda frames, future=future: future.done() or future.set_result(frames[-1]))
            drainers.append(reader)
            try:
                sock.send(SNAPSHOT_REQUEST, zmq.NOBLOCK)  # queued on the pipe connect made, sent once connected
            except zmq.ZMQError:
                future.cancel()
                continue
            reader.after_send()
        await asyncio.wait(replies.values(), timeout=timeout)
    finally:
        for reader in drainers:
            reader.close()
    answers: dict[int, Snapshot] = {}
    for pid, future in replies.items():
        if future.done() and not future.cancelled():
            try:
                answers[pid] = _decoder.decode(future.result())
            except msgspec.DecodeError:
                continue
    return answers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge(snapshots: Iterable[Snapshot]) -> Metrics:
    """Sum counters and histograms of all snapshots, gauges of live processes only."""
    total = Metrics()
    for snapshot in snapshots:
        for name, labels, value in snapshot.counters:
            total.inc(name, tuple(map(tuple, labels)), value)
        if snapshot.pid == os.getpid() or _alive(snapshot.pid):
            for name, labels, value in snapshot.gauges:
                total.add_gauge(name, tuple(map(tuple, labels)), value)
        for name, labels, counts, value_sum in snapshot.histograms:
            key = (name, tuple(map(tuple, labels)))
            state = total.histograms.get(key)
            if state is None:
                state = total.histograms[key] = [0] * len(counts) + [0.0]
            for index, count in enumerate(counts):
                state[index] += count
            state[-1] += value_sum
    return total


# ---- rendering -----------------------------------------------------------------------------------------


def _label_text(labels: Labels, extra: str = "") -> str:
    parts = [f'{key}="{_escape(value)}"' for key, value in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(metrics: Metrics, prefix: str, extra_gauges: list[tuple[str, str, Labels, float]] = ()) -> bytes:
    """Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    by_name: dict[str, list] = {}
    for (name, labels), value in sorted(metrics.counters.items()):
        by_name.setdefault(name, []).append((labels, value))
    for name, rows in by_name.items():
        full = f"{prefix}_{name}"
        lines += [f"# HELP {full} {COUNTERS.get(name, name)}", f"# TYPE {full} counter"]
        lines += [f"{full}{_label_text(labels)} {_number(value)}" for labels, value in rows]
    gauges: dict[str, tuple[str, list]] = {}
    for (name, labels), value in sorted(metrics.gauges.items()):
        gauges.setdefault(name, (GAUGES.get(name, name), []))[1].append((labels, value))
    for name, help_text, labels, value in extra_gauges:
        gauges.setdefault(name, (help_text, []))[1].append((labels, value))
    for name, (help_text, rows) in gauges.items():
        full = f"{prefix}_{name}"
        lines += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
        lines += [f"{full}{_label_text(labels)} {_number(value)}" for labels, value in rows]
    grouped: dict[str, list] = {}
    for (name, labels), state in sorted(metrics.histograms.items()):
        grouped.setdefault(name, []).append((labels, state))
    for name, rows in grouped.items():
        full = f"{prefix}_{name}"
        help_text, bounds = HISTOGRAMS[name]
        lines += [f"# HELP {full} {help_text}", f"# TYPE {full} histogram"]
        for labels, state in rows:
            cumulative = 0
            for bound, count in zip((*bounds, math.inf), state[:-1]):
                cumulative += count
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{full}_bucket{_label_text(labels, le)} {cumulative}")
            lines.append(f"{full}_sum{_label_text(labels)} {_number(state[-1])}")
            lines.append(f"{full}_count{_label_text(labels)} {cumulative}")
    return ("\n".join(lines) + "\n").encode()
