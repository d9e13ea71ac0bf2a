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

Names follow NVIDIA Dynamo's frontend (``--metrics-prefix``, default ``dynamo_frontend``). Dynamo's environment
variables ``DYN_METRICS_<HISTOGRAM>_{MIN,MAX,COUNT}`` set the buckets of five histograms (:func:`histograms_from_env`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from bisect import bisect_left
from contextvars import ContextVar
from typing import Iterable, Mapping

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


def dynamo_buckets(low: float, high: float, count: int) -> tuple[float, ...]:
    """The upper bounds Dynamo makes from ``DYN_METRICS_<X>_{MIN,MAX,COUNT}``: 0, then ``count - 1`` bounds spaced
    evenly in log scale from one step above ``low`` up to ``high``, each rounded to 2 significant figures
    (duplicates dropped)."""
    bounds = [0.0]
    for step in range(1, count):
        value = _two_figures(math.exp(math.log(low) + (math.log(high) - math.log(low)) * step / (count - 1)))
        if value != bounds[-1]:
            bounds.append(value)
    return tuple(bounds)


def _two_figures(value: float) -> float:
    scale = 10.0 ** (1 - math.floor(math.log10(value)))
    return math.floor(value * scale + 0.5) / scale  # half away from zero, as Rust's round()


DEFAULT_HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "request_duration_seconds": ("Time from request to the last byte of the response.", log_buckets(0.01, 512, 14)),
    "time_to_first_token_seconds": ("Time from request to the first generated token.", log_buckets(0.001, 480, 18)),
    "inter_token_latency_seconds": ("Time between generated tokens.", log_buckets(0.0005, 2, 13)),
    "input_sequence_tokens": ("Prompt length in tokens.", log_buckets(10, 128000, 12)),
    "output_sequence_tokens": ("Generated tokens per request.", log_buckets(1, 32000, 12)),
    "cached_tokens": ("Prompt tokens the worker found in its prefix cache.", log_buckets(10, 128000, 12)),
    "tokenizer_latency_ms": ("Chat template + tokenization time, milliseconds.", log_buckets(0.05, 1000, 12)),
    "kv_hit_rate": ("Predicted KV cache hit rate of a KV routing decision: the chosen worker's cached prefix "
                    "blocks over the prompt's blocks (0.0-1.0).", tuple(round(i * 0.05, 2) for i in range(21))),
}
BUCKET_ENV: dict[str, tuple[str, float, float, int]] = {
    # Dynamo's variable prefix and its defaults (min, max, count) in 1.6.1
    "time_to_first_token_seconds": ("DYN_METRICS_TTFT", 0.001, 480.0, 18),
    "inter_token_latency_seconds": ("DYN_METRICS_ITL", 0.001, 80.0, 20),
    "request_duration_seconds": ("DYN_METRICS_REQUEST_DURATION", 1.0, 512.0, 10),
    "input_sequence_tokens": ("DYN_METRICS_INPUT_SEQUENCE", 50.0, 128000.0, 12),
    "output_sequence_tokens": ("DYN_METRICS_OUTPUT_SEQUENCE", 50.0, 32000.0, 10),
}
SAME_BUCKETS = {"cached_tokens": "input_sequence_tokens"}  # as in Dynamo
DEPRECATED_BUCKET_PREFIX = "DYN_HISTOGRAM_"  # Dynamo's old doubled names, e.g. DYN_HISTOGRAM_DYN_METRICS_ITL_MAX
MAX_BUCKETS = 512


def histograms_from_env(environ: Mapping[str, str]) -> tuple[dict[str, tuple[str, tuple[float, ...]]], list[str]]:
    """The histograms with the buckets ``environ`` asks for, and the problems found. A histogram none of whose
    three variables is set keeps its default buckets; with any set, its buckets are Dynamo's for those settings
    (Dynamo's defaults for the others). As in Dynamo, a value that does not parse, or settings that make no
    buckets (min <= 0, min >= max, count not in 1..512), are a warning and the defaults."""
    histograms, problems = dict(DEFAULT_HISTOGRAMS), []
    for name, (prefix, low, high, count) in BUCKET_ENV.items():
        values = [_bucket_setting(environ, f"{prefix}_{suffix}", parse, default, problems)
                  for suffix, parse, default in (("MIN", float, low), ("MAX", float, high), ("COUNT", int, count))]
        if values == [None, None, None]:
            continue
        settings = [default if value is None else value for value, default in zip(values, (low, high, count))]
        if not (0 < settings[0] < settings[1] < math.inf and 0 < settings[2] <= MAX_BUCKETS):
            problems.append(f"{prefix}_{{MIN,MAX,COUNT}} = {settings} make no buckets; using {low}, {high}, {count}")
            settings = [low, high, count]
        histograms[name] = (histograms[name][0], dynamo_buckets(*settings))
    for name, model in SAME_BUCKETS.items():
        histograms[name] = (histograms[name][0], histograms[model][1])
    return histograms, problems


def _bucket_setting(environ: Mapping[str, str], name: str, parse: type[int] | type[float], default: float,
                    problems: list[str]) -> float | None:
    """The variable ``name`` (or its deprecated doubled name) parsed; None when neither is set."""
    text = environ.get(name)
    if text is None:
        text = environ.get(DEPRECATED_BUCKET_PREFIX + name)
        if text is None:
            return None
        problems.append(f"{DEPRECATED_BUCKET_PREFIX}{name} is deprecated (as in Dynamo): rename it {name}")
    try:
        return parse(text)
    except ValueError:
        problems.append(f"cannot parse {name}={text!r}; using {default}")
        return default


HISTOGRAMS, BUCKET_PROBLEMS = histograms_from_env(os.environ)
COUNTERS: dict[str, str] = {
    "requests_total": "Requests by model, endpoint, type (stream|unary), status (success|error) and error type.",
    "requests_started_total": "Requests accepted by the frontend: counted once their model is resolved.",
    "failures_total": "Requests that ended in an error, by Dynamo's error class and reason.",
    "output_tokens_total": "Generated tokens.",
    "model_cancellation_total": "Requests whose client went away before the end.",
    "model_rejection_total": "Requests rejected because every worker of the model was busy.",
    "disconnected_clients": "Clients that disconnected during a request.",
    "model_migration_total": "Requests moved to another worker mid-generation, by reason.",
    "disagg_transfers_total": "Disaggregated requests whose prefill leg ended on a prefill worker and whose decode "
                              "leg went to a decode worker with the KV transfer parameters.",
    "disagg_transfer_failures_total": "Prefill legs that failed, by reason (worker_gone, engine_error, "
                                      "no_kv_transfer_params); each is tried on another prefill worker or falls back.",
    "disagg_fallbacks_total": "Requests of a model with prefill workers served whole by a decode worker, by reason "
                              "(no_prefill_worker, prefill_failed).",
    "http_stream_stalls_total": "Streams that stopped taking tokens because the client read too slowly, by outcome "
                                "(caught_up, aborted, client_gone).",
}
GAUGES: dict[str, str] = {
    "inflight_requests": "Requests being served.",
    "active_requests": "Requests being served (Dynamo's newer name of inflight_requests; the same value).",
    "queued_requests": "Requests waiting for their first token.",
    "worker_last_time_to_first_token_seconds": "Time to first token of the last request whose first token came "
                                               "from the worker.",
    "worker_last_input_sequence_tokens": "Prompt length of that request.",
    "worker_last_inter_token_latency_seconds": "Inter-token latency of the worker's last output.",
}
ALIASES = {"active_requests": "inflight_requests"}  # rendered with the value of the other
FAILURES: dict[str, tuple[str, str]] = {
    # error_type -> Dynamo's (class, reason) of failures_total
    "validation": ("InvalidRequest", "request.invalid"),
    "not_found": ("NotFound", "request.not_found"),
    "overload": ("CapacityExhausted", "capacity.pool_exhausted"),
    "unavailable": ("Unavailable", "backend.unavailable"),
    "cancelled": ("Cancelled", "request.cancelled"),
    "backend_error": ("BackendUnknown", "backend.unknown"),
    "internal": ("Unknown", "runtime.unclassified"),
}
_bucket_problems_reported = False


class Snapshot(msgspec.Struct, array_like=True):
    """What one process has recorded: (name, labels) -> value / histogram state."""

    pid: int
    counters: list[tuple[str, Labels, float]]
    gauges: list[tuple[str, Labels, float]]
    histograms: list[tuple[str, Labels, list[int], float]]  # bucket counts (+Inf last), sum
    latest: list[tuple[str, Labels, float, float]] = []  # last-value gauges: value, when (perf_counter)


class Metrics:
    """The recorder of one process. The first one a process makes reports the bucket settings it could not use
    (logging is set up by then)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], float] = {}
        self.gauges: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], list] = {}  # [counts..., +Inf count, sum]
        self.latest: dict[tuple[str, Labels], tuple[float, float]] = {}  # value, perf_counter() when set
        _report_bucket_problems()

    def inc(self, name: str, labels: Labels, value: float = 1.0) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def add_gauge(self, name: str, labels: Labels, value: float) -> None:
        key = (name, labels)
        self.gauges[key] = self.gauges.get(key, 0.0) + value

    def set_latest(self, name: str, labels: Labels, value: float, at: float) -> None:
        """A gauge whose value is the last one set in any process: ``at`` is ``time.perf_counter()`` (the
        monotonic clock, the same in every process of the machine), and a scrape shows the latest."""
        key = (name, labels)
        current = self.latest.get(key)
        if current is None or at >= current[1]:
            self.latest[key] = (value, at)

    def model_rejected(self, model: str, endpoint: str) -> None:
        """A request of ``model`` was refused because every worker of the model was busy."""
        self.inc("model_rejection_total", (("model", model), ("endpoint", endpoint)))

    def kv_routed(self, model: str, overlap_blocks: int, prompt_blocks: int) -> None:
        """A KV routing decision: the chosen worker holds ``overlap_blocks`` of the prompt's ``prompt_blocks``."""
        rate = min(overlap_blocks / prompt_blocks, 1.0) if prompt_blocks else 0.0
        self.observe("kv_hit_rate", (("model", model),), rate)

    def observe(self, name: str, labels: Labels, value: float, count: int = 1) -> None:
        """Record ``count`` observations of ``value``."""
        bounds, state = self.histogram_state(name, labels)
        state[bisect_left(bounds, value)] += count
        state[-1] += value * count

    def histogram_state(self, name: str, labels: Labels) -> tuple[tuple[float, ...], list]:
        """(bucket bounds, state) of one histogram series, made if new. The state is updated in place, for good
        (the streamed plain token's native path keeps it): each bucket's count (``bisect_left`` of the bounds; the
        +Inf bucket after the last bound), then the sum of the values."""
        key = (name, labels)
        bounds = HISTOGRAMS[name][1]
        state = self.histograms.get(key)
        if state is None:
            state = self.histograms[key] = [0] * (len(bounds) + 1) + [0.0]
        return bounds, state

    def snapshot(self) -> Snapshot:
        return Snapshot(
            os.getpid(),
            [(name, labels, value) for (name, labels), value in self.counters.items()],
            [(name, labels, value) for (name, labels), value in self.gauges.items()],
            [(name, labels, list(state[:-1]), state[-1]) for (name, labels), state in self.histograms.items()],
            [(name, labels, value, at) for (name, labels), (value, at) in self.latest.items()],
        )


def _report_bucket_problems() -> None:
    global _bucket_problems_reported
    if not _bucket_problems_reported:
        _bucket_problems_reported = True
        for problem in BUCKET_PROBLEMS:
            log.warning("metrics: histogram buckets: %s", problem)


# ---- one request ---------------------------------------------------------------------------------------


class RequestRecord:
    """What is known about the request being served; the front door records ``requests_total`` (and, for an error,
    ``failures_total``) from it.

    The HTTP app (or gRPC servicer) creates one per request and makes it current; decoding the body says whether it
    streams, resolving its model (:meth:`accepted`) names the model, the generation marks errors and cancellations.
    """

    __slots__ = ("endpoint", "model", "stream", "started", "error_type", "counted")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.model = ""
        self.stream = False
        self.started = time.perf_counter()
        self.error_type: str | None = None
        self.counted = False  # in requests_started_total

    @property
    def request_type(self) -> str:
        return "stream" if self.stream else "unary"

    def accepted(self, metrics: "Metrics", model: str) -> None:
        """The request's model is resolved: it counts in ``requests_started_total`` (once), as a request Dynamo's
        handler accepted."""
        self.model = model
        if not self.counted:
            self.counted = True
            metrics.inc("requests_started_total", (("model", model), ("endpoint", self.endpoint),
                                                   ("request_type", self.request_type)))

    def record(self, metrics: "Metrics") -> None:
        labels = (("model", self.model), ("endpoint", self.endpoint), ("request_type", self.request_type),
                  ("status", "error" if self.error_type else "success"), ("error_type", self.error_type or ""))
        metrics.inc("requests_total", labels)
        if self.error_type:
            failure_class, reason = FAILURES.get(self.error_type, FAILURES["internal"])
            metrics.inc("failures_total", (("class", failure_class), ("reason", reason)))


CURRENT_REQUEST: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)


def current_endpoint() -> str:
    """The ``endpoint`` label of the request being served ("unknown" outside one)."""
    record = CURRENT_REQUEST.get()
    return "unknown" if record is None else record.endpoint


class GenerationObserver:
    """Records one generation's timing and token counts (gauges, TTFT, ITL, lengths, cancellations)."""

    __slots__ = ("metrics", "record", "labels", "started", "last_token_at", "first_token_seen")

    def __init__(self, metrics: "Metrics", model: str, stream: bool) -> None:
        record = CURRENT_REQUEST.get()
        if record is None:
            record = RequestRecord("unknown")
        record.stream = stream
        record.accepted(metrics, model)
        self.metrics = metrics
        self.record = record
        self.labels: Labels = (("model", model),)
        self.started = record.started
        self.last_token_at = 0.0
        self.first_token_seen = False
        metrics.add_gauge("inflight_requests", self.labels, 1)
        metrics.add_gauge("queued_requests", self.labels, 1)

    def tokens(self, count: int) -> None:
        """``count`` new tokens arrived now. The first output gives the time to first token (as in Dynamo, its
        other tokens no inter-token latency); each later one ``count`` inter-token latencies."""
        now = time.perf_counter()
        metrics = self.metrics
        if not self.first_token_seen:
            self.first_token_seen = True
            metrics.add_gauge("queued_requests", self.labels, -1)
            metrics.observe("time_to_first_token_seconds", self.labels, now - self.started)
        else:
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
            record = self.record
            record.error_type = "cancelled"
            metrics.inc("model_cancellation_total", (("model", record.model), ("endpoint", record.endpoint),
                                                     ("request_type", record.request_type)))
            metrics.inc("disconnected_clients", ())
        elif error:
            self.record.error_type = "backend_error"


class WorkerTiming:
    """Dynamo's per-worker "last" gauges, from one generation: at its first output the time to first token and the
    prompt length, at each later output the inter-token latency, labelled with the worker that made the output
    (``worker_id``; ``dp_rank`` 0 and ``worker_type`` decode, as Dynamo labels an aggregated worker)."""

    __slots__ = ("metrics", "started", "prompt_tokens", "last_at", "worker", "labels")

    def __init__(self, metrics: "Metrics", started: float, prompt_tokens: int) -> None:
        self.metrics = metrics
        self.started = started
        self.prompt_tokens = prompt_tokens
        self.last_at = 0.0
        self.worker = ""
        self.labels: Labels = ()

    def serving(self, worker: str) -> None:
        """The outputs come from ``worker`` from now on (its first output, or a migration's), tokens or not."""
        if worker != self.worker:
            self.worker = worker
            self.labels = (("worker_id", worker), ("dp_rank", "0"), ("worker_type", "decode"))

    def tokens(self, worker: str, count: int) -> None:
        """``count`` new tokens arrived now from ``worker``."""
        now = time.perf_counter()
        if worker != self.worker:  # the first output, or a migration
            self.serving(worker)
        metrics, labels = self.metrics, self.labels
        if not self.last_at:
            metrics.set_latest("worker_last_time_to_first_token_seconds", labels, now - self.started, now)
            metrics.set_latest("worker_last_input_sequence_tokens", labels, self.prompt_tokens, now)
        else:
            metrics.set_latest("worker_last_inter_token_latency_seconds", labels, (now - self.last_at) / count, now)
        self.last_at = now


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
    """Sum counters and histograms of all snapshots and gauges of live processes only; of a last-value gauge, the
    latest value any live process set."""
    total = Metrics()
    for snapshot in snapshots:
        for name, labels, value in snapshot.counters:
            total.inc(name, tuple(map(tuple, labels)), value)
        if snapshot.pid == os.getpid() or _alive(snapshot.pid):
            for name, labels, value in snapshot.gauges:
                total.add_gauge(name, tuple(map(tuple, labels)), value)
            for name, labels, value, at in snapshot.latest:
                total.set_latest(name, tuple(map(tuple, labels)), value, at)
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
    values = {**metrics.gauges, **{key: value for key, (value, _) in metrics.latest.items()}}
    values.update({(alias, labels): value for alias, name in ALIASES.items()
                   for (gauge, labels), value in metrics.gauges.items() if gauge == name})
    for (name, labels), value in sorted(values.items()):
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
