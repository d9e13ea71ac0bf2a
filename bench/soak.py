"""Soak test: ``python -m bench soak --minutes N`` holds a mixed load on the daemon and watches its memory.

Starts the daemon (``python -m frontend`` on 127.0.0.1, a free port, ``--mock-workers`` mock workers of the chat
model plus one of the embedding model, ``--mock-speedup-ratio``, ``--workers`` HTTP processes) unless ``--url``
names a running server, then for ``--minutes`` keeps ``--concurrency`` requests in flight, each one of: unary
chat, streamed chat with usage, completions, embeddings (when the server lists ``--embedding-model``), an invalid
chat request that must get a 400, and a streamed chat the client drops after its first content chunk.

Every ``--interval-s`` it samples the RSS (``VmRSS`` of ``/proc/<pid>/status``) of every process of the daemon's
session (named by ``/proc/<pid>/comm``: the daemon, dyn-http, dyn-tokenizer, dyn-registry, dyn-indexer,
dyn-mocker, multiprocessing's resource tracker) and the interval's requests, errors by kind and latency p50/p99.
With ``--url`` the processes are those of ``--pid``, or of the local process listening on the URL's port.

At the end it prints per process the RSS of the first sample, of the baseline (the first sample after the
warm-up: the first minute or 10 % of the run, whichever is shorter), the last and the largest, and the growth
(last - baseline), with totals; writes a JSON report (``--output``); and exits 1 when an unexpected error
happened (5xx, unexpected 4xx or other status, connection error, timeout, malformed response), requests were
still counted active on the workers after the load, a process of the session exited, or a process's RSS grew
more than ``--max-rss-growth-mb`` from the baseline. It stops only the daemon it started: SIGTERM to its PID,
SIGKILL to its process group if it lingers, then SIGKILL by PID to any process of its session still alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "frontend" / "engines" / "mocker" / "corpus.txt"
DAEMON_EMBEDDING_MODEL = "tiny-embed"   # what the daemon's ``--mock-extra-models embedding`` worker serves

MAX_MINUTES = 24 * 60.0
WARMUP_FRACTION, WARMUP_MAX_S = 0.10, 60.0
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 45.0
DRAIN_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_SLOT = 100_000_000     # a backstop: slots stop at the deadline long before
RESERVOIR_SIZE = 20_000                 # latencies kept for the percentiles of the run, per request kind
MAX_ERROR_MESSAGES = 20
DISCONNECT_TOKENS = 1024                # a stream long enough to drop midway
PROMPT_COUNT = 256
CONNECTION_ERROR_PAUSE_S = 0.05         # after a connection error, so a dead server is not hammered
MB = 1024.0                             # kB per MB (VmRSS is in kB)

KIND_WEIGHTS = {"chat": 25, "chat_stream": 30, "completions": 15, "embeddings": 10, "invalid": 10, "disconnect": 10}
TIMED_KINDS = ("chat", "chat_stream", "completions", "embeddings")  # their latencies make the p50/p99
ERROR_KINDS = ("http_5xx", "unexpected_4xx", "unexpected_status", "connection", "timeout", "bad_response")
Number = TypeVar("Number", int, float)

INVALID_BODIES: tuple[dict[str, Any], ...] = (
    {"messages": [{"role": "user", "content": "hello"}], "max_tokens": -1},
    {"messages": "not a list"},
    {},
    {"messages": [{"role": "user", "content": "hello"}], "temperature": "hot"},
)


def bounded(kind: Callable[[str], Number], low: float, high: float) -> Callable[[str], Number]:
    """An argparse type: ``kind(text)`` within ``low`` (exclusive when 0) .. ``high``."""
    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (low < value if low == 0 else low <= value) or value > high or math.isnan(value):
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value
    return parse


def add_soak_parser(commands: argparse._SubParsersAction) -> None:
    """The ``soak`` subcommand and its flags."""
    text = "hold a mixed load on the daemon for --minutes, sampling its processes' RSS and the errors"
    sub = commands.add_parser("soak", help=text, description=__doc__.split("\n\n")[0] + " " + text + ".")
    target = sub.add_argument_group("target")
    target.add_argument("--url", "-u", help="base URL of a running server (default: start the daemon here)")
    target.add_argument("--pid", type=int, help="with --url: the daemon's PID whose processes are sampled "
                                                "(default: the local process listening on the URL's port)")
    target.add_argument("--model", "-m", default="tiny", help="chat/completions model")
    target.add_argument("--embedding-model", default="tiny-embed", help="embeddings model (skipped if not listed)")
    daemon = sub.add_argument_group("the daemon started without --url")
    daemon.add_argument("--workers", type=bounded(int, 1, 64), default=2, help="HTTP worker processes")
    daemon.add_argument("--mock-workers", type=bounded(int, 1, 64), default=2, help="mock workers of --model")
    daemon.add_argument("--mock-speedup-ratio", type=bounded(float, 0, 1e9), default=1e6,
                        help="divides the mock workers' simulated time (1e6: no delay)")
    daemon.add_argument("--daemon-log", type=Path, help="daemon output (default: beside --output)")
    load = sub.add_argument_group("load and checks")
    load.add_argument("--minutes", type=bounded(float, 0, MAX_MINUTES), required=True,
                      help=f"how long to hold the load (at most {MAX_MINUTES:g})")
    load.add_argument("--concurrency", type=bounded(int, 1, 4096), default=16, help="requests in flight")
    load.add_argument("--interval-s", type=bounded(float, 0.1, 3600), default=10.0, help="seconds between samples")
    load.add_argument("--max-tokens", type=bounded(int, 1, 4096), default=32, help="max_tokens of the requests")
    load.add_argument("--request-timeout-s", type=bounded(float, 0, 3600), default=60.0)
    load.add_argument("--max-rss-growth-mb", type=bounded(float, 0, 1e6), default=100.0,
                      help="fail when a process's RSS grew more than this from the baseline to the end")
    load.add_argument("--output", "-o", type=Path, default=Path("artifacts/soak/soak_report.json"),
                      help="JSON report")
    load.add_argument("--random-seed", type=int, default=0)


# ---- /proc ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    pgrp: int
    session: int
    comm: str


def read_stat(pid: int) -> ProcStat | None:
    """Parent, process group, session and comm of ``pid`` (None when it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            head, _, rest = handle.read().rpartition(")")
    except OSError:
        return None
    fields = rest.split()  # state ppid pgrp session ...
    if len(fields) < 4 or fields[0] == "Z":
        return None
    return ProcStat(int(fields[1]), int(fields[2]), int(fields[3]), head.partition("(")[2])


def rss_kb(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` in kB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def all_stats() -> dict[int, ProcStat]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := read_stat(int(entry))) is not None:
            stats[int(entry)] = stat
    return stats


def group_of(root: int, stats: dict[int, ProcStat] | None = None) -> dict[int, str]:
    """pid -> comm of every process of ``root``'s session when ``root`` leads one, else of ``root`` and its
    descendants."""
    stats = all_stats() if stats is None else stats
    if root not in stats:
        return {}
    if stats[root].session == root:
        return {pid: stat.comm for pid, stat in stats.items() if stat.session == root}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    found, todo = {root: stats[root].comm}, [root]
    while todo and len(found) <= len(stats):
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = stats[child].comm
                todo.append(child)
    return found


def listening_root(port: int) -> int | None:
    """The local process that started the server listening on TCP ``port``: the topmost ancestor, in the same
    process group, of a process holding the listening socket (None when none is readable)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for entry in os.listdir("/proc") if inodes else []:
        if not entry.isdigit():
            continue
        try:
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{entry}/fd")):
                holders.add(int(entry))
        except OSError:
            continue
    stats = all_stats()
    holder = min((pid for pid in holders if pid in stats), default=None)
    for _ in range(len(stats)):
        parent = stats[holder].ppid if holder is not None else 0
        if parent not in stats or stats[parent].pgrp != stats[holder].pgrp:
            break
        holder = parent
    return holder


class ProcessWatcher:
    """Samples the RSS of the processes of one daemon and remembers the name of each one it saw."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.names: dict[int, str] = {}

    def sample(self) -> dict[int, int]:
        rss = {}
        for pid, comm in group_of(self.root).items():
            if (kb := rss_kb(pid)) is not None:
                self.names[pid] = comm
                rss[pid] = kb
        return rss


# ---- the load ---------------------------------------------------------------------------------------------


class Unexpected(Exception):
    """A response (or its absence) the soak did not expect; ``kind`` is one of ERROR_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Reservoir:
    """A uniform sample of at most ``size`` values of an unbounded stream (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng = size, rng
        self.values: list[float] = []
        self.seen = 0

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        elif (slot := self.rng.randrange(self.seen)) < self.size:
            self.values[slot] = value


def percentile(values: Iterable[float], q: float) -> float | None:
    """The linearly interpolated ``q``-th percentile (None for no values)."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Tally:
    """Requests and errors so far, the latencies of the current interval and a sample of the whole run's."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_by_request: Counter[str] = Counter()
        self.messages: list[str] = []
        self.by_kind = {kind: Reservoir(RESERVOIR_SIZE, self.rng) for kind in TIMED_KINDS}
        self.window = Reservoir(RESERVOIR_SIZE, self.rng)

    def ok(self, kind: str, seconds: float) -> None:
        self.requests[kind] += 1
        if kind in self.by_kind:
            self.by_kind[kind].add(seconds)
            self.window.add(seconds)

    def error(self, kind: str, error: str, message: str) -> None:
        self.requests[kind] += 1
        self.errors[error] += 1
        self.errors_by_request[kind] += 1
        if len(self.messages) < MAX_ERROR_MESSAGES:
            self.messages.append(f"{kind}: {error}: {message[:300]}")

    def take_window(self) -> list[float]:
        values, self.window = self.window.values, Reservoir(RESERVOIR_SIZE, self.rng)
        return values


async def expect_status(response: aiohttp.ClientResponse, expected: int) -> None:
    if response.status == expected:
        return
    body = (await response.read())[:300].decode(errors="replace")
    kind = "http_5xx" if response.status >= 500 else "unexpected_4xx" if response.status >= 400 \
        else "unexpected_status"
    raise Unexpected(kind, f"HTTP {response.status} (expected {expected}): {body}")


async def sse_data(response: aiohttp.ClientResponse, limit: int) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of an SSE response, at most ``limit`` of them (and ``2 * limit`` lines)."""
    events = lines = 0
    async for line in response.content:
        lines += 1
        line = line.strip()
        if line.startswith(b"data:"):
            events += 1
            if events > limit or lines > 2 * limit:
                raise Unexpected("bad_response", f"more than {limit} events")
            yield line[5:].strip()
        elif lines > 2 * limit:
            raise Unexpected("bad_response", f"more than {2 * limit} lines")


def decode(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise Unexpected("bad_response", f"not JSON: {data[:200]!r}") from None
    if not isinstance(value, dict) or "error" in value:
        raise Unexpected("bad_response", f"unexpected body: {data[:300]!r}")
    return value


class Load:
    """The request kinds, over one pooled aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str, embedding_model: str | None,
                 max_tokens: int, prompts: list[str]) -> None:
        self.session, self.base = session, base_url.rstrip("/")
        self.model, self.embedding_model = model, embedding_model
        self.max_tokens, self.prompts = max_tokens, prompts
        self.weights = {kind: weight for kind, weight in KIND_WEIGHTS.items()
                        if embedding_model is not None or kind != "embeddings"}

    def _chat(self, rng: random.Random, **extra: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": rng.choice(self.prompts)}],
                "max_tokens": rng.randint(1, self.max_tokens), **extra}

    async def chat(self, rng: random.Random) -> None:
        async with self.session.post(f"{self.base}/v1/chat/completions", json=self._chat(rng)) as response:
            await expect_status(response, 200)
            body = decode(await response.read())
        choice = body["choices"][0]
        if not isinstance(choice["message"]["content"], str) or not choice["finish_reason"] \
                or body["usage"]["completion_tokens"] < 1:
            raise Unexpected("bad_response", f"chat: {str(body)[:300]}")

    async def chat_stream(self, rng: random.Random) -> None:
        body = self._chat(rng, stream=True, stream_options={"include_usage": True})
        content, finish, usage, done = 0, None, None, False
        async with self.session.post(f"{self.base}/v1/chat/completions", json=body) as response:
            await expect_status(response, 200)
            async for data in sse_data(response, 2 * body["max_tokens"] + 8):
                if done:
                    raise Unexpected("bad_response", "data after [DONE]")
                if data == b"[DONE]":
                    done = True
                    continue
                chunk = decode(data)
                for choice in chunk["choices"]:
                    content += bool(choice["delta"].get("content"))
                    finish = choice["finish_reason"] or finish
                usage = chunk.get("usage") or usage
        if not (done and content and finish and usage and usage["completion_tokens"] >= 1):
            raise Unexpected("bad_response", f"stream: done={done} content chunks={content} finish={finish} "
                                             f"usage={usage}")

    async def completions(self, rng: random.Random) -> None:
        body = {"model": self.model, "prompt": rng.choice(self.prompts), "max_tokens": rng.randint(1, self.max_tokens)}
        async with self.session.post(f"{self.base}/v1/completions", json=body) as response:
            await expect_status(response, 200)
            reply = decode(await response.read())
        if not isinstance(reply["choices"][0]["text"], str) or not reply["choices"][0]["finish_reason"]:
            raise Unexpected("bad_response", f"completions: {str(reply)[:300]}")

    async def embeddings(self, rng: random.Random) -> None:
        body = {"model": self.embedding_model, "input": rng.choice(self.prompts)}
        async with self.session.post(f"{self.base}/v1/embeddings", json=body) as response:
            await expect_status(response, 200)
            reply = decode(await response.read())
        vector = reply["data"][0]["embedding"]
        if not vector or not all(isinstance(value, float) for value in vector[:8]):
            raise Unexpected("bad_response", f"embeddings: {str(reply)[:300]}")

    async def invalid(self, rng: random.Random) -> None:
        body = {"model": self.model, **rng.choice(INVALID_BODIES)}
        async with self.session.post(f"{self.base}/v1/chat/completions", json=body) as response:
            await expect_status(response, 400)
            reply = await response.read()
        if b'"error"' not in reply:
            raise Unexpected("bad_response", f"400 without an error object: {reply[:300]!r}")

    async def disconnect(self, rng: random.Random) -> None:
        body = self._chat(rng, stream=True, max_tokens=DISCONNECT_TOKENS, ignore_eos=True)
        async with self.session.post(f"{self.base}/v1/chat/completions", json=body) as response:
            await expect_status(response, 200)
            async for data in sse_data(response, 2 * DISCONNECT_TOKENS + 8):
                if data != b"[DONE]" and any(choice["delta"].get("content") for choice in decode(data)["choices"]):
                    response.close()  # drop the connection with the rest of the stream unread
                    return
        raise Unexpected("bad_response", "the stream ended before any content")

    async def slot(self, index: int, seed: int, deadline: float, stop: asyncio.Event, tally: Tally) -> None:
        """Send requests of random kinds back to back until the deadline (or ``stop``)."""
        rng = random.Random(seed * 100_003 + index)
        kinds, weights = list(self.weights), list(self.weights.values())
        for _ in range(MAX_REQUESTS_PER_SLOT):
            if stop.is_set() or time.monotonic() >= deadline:
                return
            kind = rng.choices(kinds, weights)[0]
            start = time.perf_counter()
            try:
                await getattr(self, kind)(rng)
            except Unexpected as exc:
                tally.error(kind, exc.kind, str(exc))
            except TimeoutError:
                tally.error(kind, "timeout", "no complete response within the request timeout")
            except aiohttp.ClientError as exc:
                tally.error(kind, "connection", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(CONNECTION_ERROR_PAUSE_S)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                tally.error(kind, "bad_response", f"{type(exc).__name__}: {exc}")
            else:
                tally.ok(kind, time.perf_counter() - start)


def make_prompts(count: int, seed: int) -> list[str]:
    words = CORPUS.read_text(encoding="utf-8").split()
    rng = random.Random(seed)
    return [f"Soak prompt {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(4, 60)))
            for i in range(count)]


# ---- one run ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    duration_s: float
    warmup_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False
    in_flight_after: int | None = None


async def soak_loop(args: argparse.Namespace, base_url: str, embedding_model: str | None,
                    watcher: ProcessWatcher | None, daemon: subprocess.Popen | None, tally: Tally) -> Run:
    """Hold the load for ``--minutes`` while sampling every ``--interval-s``; returns the samples."""
    duration = args.minutes * 60
    run = Run(duration, round(min(WARMUP_MAX_S, WARMUP_FRACTION * duration), 3))
    stop = asyncio.Event()

    def interrupt() -> None:
        run.interrupted = True
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    started = time.monotonic()
    deadline = started + duration
    totals: dict[str, Any] = {"requests": 0, "errors": Counter()}  # at the previous sample

    def sample(final: bool = False) -> None:
        rss = watcher.sample() if watcher else {}
        window = tally.take_window()
        requests, errors = sum(tally.requests.values()), sum(tally.errors.values())
        interval_errors = {kind: n - totals["errors"][kind] for kind, n in tally.errors.items()
                           if n - totals["errors"][kind]}
        entry = {"t_s": round(time.monotonic() - started, 3), "requests": requests,
                 "interval_requests": requests - totals["requests"], "errors": errors,
                 "interval_errors": interval_errors, "p50_ms": ms(percentile(window, 50)),
                 "p99_ms": ms(percentile(window, 99)), "rss_kb": rss}
        totals["requests"], totals["errors"] = requests, Counter(tally.errors)
        run.samples.append(entry)
        if len(run.samples) > 1:
            print(progress_line(entry, run.samples[0], final), flush=True)

    sample()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        load = Load(session, base_url, args.model, embedding_model, args.max_tokens,
                    make_prompts(PROMPT_COUNT, args.random_seed))
        slots = [asyncio.ensure_future(load.slot(index, args.random_seed, deadline, stop, tally))
                 for index in range(args.concurrency)]
        for k in range(1, math.ceil(duration / args.interval_s) + 1):
            wake = min(started + k * args.interval_s, deadline)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, wake - time.monotonic()))
                break
            except TimeoutError:
                pass
            if wake >= deadline:
                break
            sample()
            if daemon is not None and daemon.poll() is not None:
                run.failures.append(f"the daemon exited with code {daemon.returncode} during the run")
                stop.set()
        await asyncio.gather(*slots)  # in-flight requests finish (each within --request-timeout-s)
    run.in_flight_after = await drained(base_url)
    sample(final=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
    return run


async def drained(base_url: str) -> int | None:
    """Requests still active on the workers (router and engine counts, from /health) once they settle, up to
    DRAIN_TIMEOUT_S; None when /health does not report them."""
    active = None
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            health = await asyncio.to_thread(get_json, f"{base_url.rstrip('/')}/health")
            loads = [instance["load"] for instance in health["instances"] if instance.get("load")]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        active = sum(load.get("active_requests", 0) + load.get("engine_running_requests", 0)
                     + load.get("engine_waiting_requests", 0) for load in loads)
        if not active:
            return 0
        await asyncio.sleep(0.2)
    return active


def progress_line(entry: dict[str, Any], first: dict[str, Any], final: bool) -> str:
    total_mb = sum(entry["rss_kb"].values()) / MB
    growth = total_mb - sum(first["rss_kb"].values()) / MB
    p50 = "-" if entry["p50_ms"] is None else f"{entry['p50_ms']:.1f}"
    p99 = "-" if entry["p99_ms"] is None else f"{entry['p99_ms']:.1f}"
    label = "end" if final else f"{entry['t_s']:.0f}s"
    return (f"[{label:>6}] {entry['requests']:>9,} requests (+{entry['interval_requests']:,}), "
            f"{entry['errors']} errors, p50 {p50} ms, p99 {p99} ms, RSS {total_mb:,.1f} MB in "
            f"{len(entry['rss_kb'])} processes ({growth:+,.1f})")


# ---- the report -------------------------------------------------------------------------------------------


def baseline_index(samples: list[dict[str, Any]], warmup_s: float) -> int:
    """The first sample at or after the warm-up (the last one when the run was shorter)."""
    return next((i for i, entry in enumerate(samples) if entry["t_s"] >= warmup_s), len(samples) - 1)


def process_rows(names: dict[int, str], samples: list[dict[str, Any]], base: int, root: int | None,
                 ) -> list[dict[str, Any]]:
    """Per process: RSS (MB) first, at the baseline (or when it appeared, if later), last, max; growth."""
    rows = []
    for pid, name in names.items():
        series = [(i, entry["rss_kb"][pid]) for i, entry in enumerate(samples) if pid in entry["rss_kb"]]
        if not series:
            continue
        baseline = next((kb for i, kb in series if i >= base), series[-1][1])
        last = series[-1][1]
        rows.append({"name": name, "pid": pid, "daemon": pid == root, "first_mb": round(series[0][1] / MB, 2),
                     "baseline_mb": round(baseline / MB, 2), "last_mb": round(last / MB, 2),
                     "max_mb": round(max(kb for _, kb in series) / MB, 2),
                     "growth_mb": round((last - baseline) / MB, 2), "samples": len(series),
                     "alive_at_end": series[-1][0] == len(samples) - 1})
    return sorted(rows, key=lambda row: (not row["daemon"], row["name"], row["pid"]))


def total_row(samples: list[dict[str, Any]], base: int) -> dict[str, float]:
    totals = [sum(entry["rss_kb"].values()) / MB for entry in samples]
    return {"first_mb": round(totals[0], 2), "baseline_mb": round(totals[base], 2), "last_mb": round(totals[-1], 2),
            "max_mb": round(max(totals), 2), "growth_mb": round(totals[-1] - totals[base], 2)}


def verdict(rows: list[dict[str, Any]], tally: Tally, run: Run, limit_mb: float) -> list[str]:
    """Why the run failed (empty when it passed)."""
    failures = list(run.failures)
    if run.interrupted:
        failures.append("interrupted before --minutes had passed")
    if tally.errors:
        failures.append(f"{sum(tally.errors.values())} unexpected errors: {dict(tally.errors)}")
    if not sum(tally.requests.values()):
        failures.append("no request was sent")
    if run.in_flight_after:
        failures.append(f"{run.in_flight_after} requests still active on the workers {DRAIN_TIMEOUT_S:g} s "
                        f"after the load")
    for row in rows:
        if row["growth_mb"] > limit_mb:
            failures.append(f"{row['name']} [{row['pid']}]: RSS grew {row['growth_mb']:.1f} MB after the warm-up "
                            f"(limit {limit_mb:g} MB)")
        if not row["alive_at_end"]:
            failures.append(f"{row['name']} [{row['pid']}] exited during the run")
    return failures


def print_table(rows: list[dict[str, Any]], total: dict[str, float]) -> None:
    print(f"{'process':<16} {'pid':>8} {'first MB':>9} {'baseline':>9} {'last MB':>9} {'max MB':>9} "
          f"{'growth MB':>10}")
    for row in [*rows, {"name": "total", "pid": "", **total}]:
        name = row["name"] + (" *" if row.get("daemon") else "")
        print(f"{name:<16} {row['pid']:>8} {row['first_mb']:>9,.1f} {row['baseline_mb']:>9,.1f} "
              f"{row['last_mb']:>9,.1f} {row['max_mb']:>9,.1f} {row['growth_mb']:>+10,.1f}")


def build_report(args: argparse.Namespace, base_url: str, root: int | None, embedding_model: str | None,
                 run: Run, tally: Tally, names: dict[int, str]) -> dict[str, Any]:
    base = baseline_index(run.samples, run.warmup_s)
    rows = process_rows(names, run.samples, base, root)
    timed = [value for kind in TIMED_KINDS for value in tally.by_kind[kind].values]
    return {
        "config": {"url": base_url, "started_daemon": args.url is None, "daemon_pid": root, "model": args.model,
                   "embedding_model": embedding_model, "minutes": args.minutes, "concurrency": args.concurrency,
                   "interval_s": args.interval_s, "max_tokens": args.max_tokens,
                   "max_rss_growth_mb": args.max_rss_growth_mb, "workers": args.workers,
                   "mock_workers": args.mock_workers, "mock_speedup_ratio": args.mock_speedup_ratio},
        "duration_s": run.samples[-1]["t_s"], "warmup_s": run.warmup_s, "baseline_t_s": run.samples[base]["t_s"],
        "requests_total": sum(tally.requests.values()), "requests": dict(tally.requests),
        "errors_total": sum(tally.errors.values()), "errors": {kind: tally.errors[kind] for kind in ERROR_KINDS},
        "errors_by_request_kind": dict(tally.errors_by_request), "error_messages": tally.messages,
        "latency_ms": {"p50": ms(percentile(timed, 50)), "p99": ms(percentile(timed, 99)),
                       "by_kind": {kind: {"p50": ms(percentile(tally.by_kind[kind].values, 50)),
                                          "p99": ms(percentile(tally.by_kind[kind].values, 99))}
                                   for kind in TIMED_KINDS if tally.by_kind[kind].values}},
        "in_flight_after": run.in_flight_after,
        "processes": rows, "rss_total": total_row(run.samples, base) if rows else None,
        "samples": run.samples, "interrupted": run.interrupted,
    }


# ---- the daemon -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def start_daemon(args: argparse.Namespace, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``python -m frontend`` in a new session; returns it and its base URL once every worker registered."""
    port = free_port()
    argv = [sys.executable, "-m", "frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
            "--registry-endpoint", f"tcp://127.0.0.1:{free_port()}", "--workers", str(args.workers),
            "--mock-workers", str(args.mock_workers), "--mock-speedup-ratio", repr(args.mock_speedup_ratio),
            "--mock-model-name", args.model, "--mock-extra-models", "embedding"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            models = [instance["model"] for instance in get_json(f"{url}/health")["instances"]]
            if models.count(args.model) >= args.mock_workers and DAEMON_EMBEDDING_MODEL in models:
                return process, url
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.2)
    stop_daemon(process, group_of(process.pid))
    raise RuntimeError(f"the daemon did not come up within {STARTUP_TIMEOUT_S:g} s (exit code "
                       f"{process.returncode}); its output: {log_path}")


def in_session(pid: int, session: int) -> bool:
    stat = read_stat(pid)
    return stat is not None and stat.session == session


def stop_daemon(process: subprocess.Popen, seen: Iterable[int]) -> None:
    """SIGTERM the daemon this run started; SIGKILL its process group if it lingers; then SIGKILL, by PID, any
    process of its session (among ``seen``) still alive ``STOP_TIMEOUT_S`` later."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: the group is still the one we started
            process.wait()
    left = [pid for pid in seen if pid != process.pid]
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := [pid for pid in left if in_session(pid, process.pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def served_models(base_url: str) -> list[str]:
    try:
        return [entry["id"] for entry in get_json(f"{base_url.rstrip('/')}/v1/models", timeout=10)["data"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot list the models of {base_url}: {exc}") from None


def target_root(args: argparse.Namespace) -> int | None:
    """With --url: the PID whose processes are sampled (--pid, or the local listener of the URL's port)."""
    if args.pid is not None:
        if read_stat(args.pid) is None:
            raise ValueError(f"no process {args.pid}")
        return args.pid
    parts = urlsplit(args.url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    return listening_root(parts.port or (443 if parts.scheme == "https" else 80))


# ---- entry ------------------------------------------------------------------------------------------------


def soak(args: argparse.Namespace) -> int:
    """``python -m bench soak``: 0 when the run passed, 1 when it failed."""
    daemon, root, watcher = None, None, None
    output: Path = args.output
    try:
        if args.url is None:
            log_path = args.daemon_log or output.with_name(output.stem + "_daemon.log")
            print(f"starting the daemon ({args.workers} HTTP workers, {args.mock_workers} mock workers + embedding, "
                  f"speedup {args.mock_speedup_ratio:g}); output in {log_path}", flush=True)
            try:
                daemon, base_url = start_daemon(args, log_path)
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            root = daemon.pid
        else:
            base_url = args.url.rstrip("/")
            root = target_root(args)
            if root is None:
                print("warning: no process to sample (give --pid): RSS is not watched", file=sys.stderr)
        models = served_models(base_url)
        if args.model not in models:
            raise ValueError(f"{base_url} does not serve {args.model!r} (it serves {', '.join(models) or 'nothing'})")
        embedding_model = args.embedding_model if args.embedding_model in models else None
        watcher = ProcessWatcher(root) if root is not None else None
        tally = Tally(args.random_seed)
        print(f"soak: {base_url}, {args.minutes:g} min, concurrency {args.concurrency}, sample every "
              f"{args.interval_s:g} s, embeddings {'on' if embedding_model else 'off (not served)'}", flush=True)
        run = uvloop.run(soak_loop(args, base_url, embedding_model, watcher, daemon, tally))
    finally:
        if daemon is not None:
            stop_daemon(daemon, watcher.names if watcher else group_of(daemon.pid))
    report = build_report(args, base_url, root, embedding_model, run, tally, watcher.names if watcher else {})
    report["failures"] = verdict(report["processes"], tally, run, args.max_rss_growth_mb)
    report["ok"] = not report["failures"]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print_summary(report)
    print(f"report: {output}")
    return 0 if report["ok"] else 1


def print_summary(report: dict[str, Any]) -> None:
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(report["requests"].items()))
    latency = report["latency_ms"]
    print(f"\n{report['requests_total']:,} requests in {report['duration_s']:.1f} s ({kinds}); "
          f"{report['errors_total']} unexpected errors; latency p50 {latency['p50']} ms, p99 {latency['p99']} ms")
    if report["errors_total"]:
        print("errors: " + ", ".join(f"{kind} {n}" for kind, n in report["errors"].items() if n))
        for message in report["error_messages"][:5]:
            print(f"  {message}")
    if report["processes"]:
        print(f"RSS: baseline at {report['baseline_t_s']:.1f} s (warm-up {report['warmup_s']:.1f} s); "
              f"growth = last - baseline; * = the daemon")
        print_table(report["processes"], report["rss_total"])
    print("PASS" if report["ok"] else "FAIL: " + "; ".join(report["failures"]))
