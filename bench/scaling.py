"""How the frontend's costs scale: with concurrent streams, and with the number of workers the KV router weighs.

    .venv/bin/python -m bench.scaling                      # both tables (~2 minutes)
    .venv/bin/python -m bench.scaling --streams 16,64 --duration 5 --skip-routing
    .venv/bin/python -m bench.scaling --skip-streams --workers 8,64,256

1. Streams. Starts its own daemon (``./scripts/serve --http-port PORT --registry-endpoint tcp://127.0.0.1:PORT2
   --mock-workers 2 --mock-speedup-ratio 1 --router-mode round_robin --mock-extra-models none``, in a session of
   its own, on free loopback ports) and, for each level N of --streams (default 16, 64, 256, 1024), keeps N
   streamed chat requests in flight (closed loop: each of N keep-alive HTTP/1.1 connections sends the next
   request when the previous one ends; ``max_tokens`` 64, ``ignore_eos``, ``stream_options.include_usage``)
   for --warmup seconds, then a measured window of --duration seconds. Requests in flight at the end of the
   window finish (not counted past the window) before the next level opens new connections.
   The load comes from --client-procs processes, each one asyncio loop (uvloop when installed) on raw
   ``asyncio.open_connection`` sockets with a minimal chunked/SSE parser: no JSON decoding per event (only
   the final usage event is looked at), so that the client is cheap per token.
   Reported per level:
   - frontend CPU per token: utime+stime (/proc/PID/stat) over the window of every process of the daemon's
     session except the mock workers (cmdline containing "mocker"), divided by the tokens received in the
     window. Tokens received = per request, its usage ``completion_tokens`` times the share of its content
     events that arrived inside the window (exact when every event carries one token, see tokens/event);
   - inter-token latency, client side: the gap between consecutive SSE events of one stream that carry
     content, counted where the later event arrives inside the window. Events read from the socket in one
     read share a timestamp (as in bench/client.py), so a client that falls behind shows gaps of 0 next to
     long ones; p99 is the tail a reader sees;
   - tokens/s, content events per request, tokens per event (usage / events), errors;
   - CPU of the mock workers and of the client processes over the window (cores; the busiest client
     process in % of one core: near 100 % means that level was bounded by the client, not the frontend),
     the machine's busy share (/proc/stat) and the part of it no process of this benchmark used ("other":
     someone else's load), and, once before the levels, the idle daemon's CPU (--idle seconds).

2. Routing. In-process, no daemon: a shared KV index (``KvIndexWriter``, the indexer's side) with N worker
   slots (--workers, default 8, 64, 256) holding, per worker, prefixes of random depth of --prompts-per-worker
   prompts drawn from a pool of shared 2,000-token prompts (block size 16: 125 blocks each) plus
   --filler-blocks unrelated blocks, and random active loads; the index has max(N, 64) slots (64 is the
   daemon's default --kv-index-max-workers, 256 its maximum). One decision is ``Router.pick`` of
   ``frontend.router.select`` in ``kv`` mode on a ``KvIndexReader`` of that segment, exactly what the gateway
   calls per request: ``find_matches`` over the prompt's block hashes (array('Q') bytes, as the hot path passes
   them), the load and cached-block lookups of every instance, ``cost.select_worker`` over all N, and the load
   accounting of the chosen one (undone with ``Router.finish`` outside the timing). Queries are pool prompts
   (every one is held to some depth by several workers). Hashing the prompt (``block_hashes``) does not depend
   on N and is reported once, separately.

3. With ``--peer-dynamo DIR`` (the directory of ``start-dynamo.sh`` and ``stop-dynamo.sh``, e.g.
   ``../shared/peers/dynamo``), the same stream levels run against NVIDIA Dynamo's frontend with 2 mock workers
   (``NUM_MOCKERS=2 ROUTER_MODE=round-robin SPEEDUP=1``), whose frontend CPU is its frontend process's (the pid
   file ``$PEER_HOME/run/pids/frontend.pid``), and a table gives ours / Dynamo per level. Tokens are counted as
   they arrive in the window, not per finished response, so the figure does not step with the responses that
   happen to finish inside it (``side_by_side.py``'s paced figure does: docs/BENCHMARKS.md). For its paced
   figure: ``--streams 32 --max-tokens 128 --skip-routing --peer-dynamo ../shared/peers/dynamo``.

Only 127.0.0.1 is used. Every wait is bounded (daemon start 60 s, connections, drain --drain seconds).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import datetime
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/scaling.py`
    sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
CONTENT = re.compile(rb'"content":"[^"]')  # a non-empty content delta (JSON escapes start with a backslash)
COMPLETION_TOKENS = re.compile(rb'"completion_tokens":(\d+)')


# == Streams: the client ===================================================================================

def request_bytes(port: int, model: str, max_tokens: int) -> bytes:
    body = json.dumps({
        "model": model, "messages": [{"role": "user", "content": "Tell me a short story about a lighthouse."}],
        "stream": True, "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "ignore_eos": True,
    }, separators=(",", ":")).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


@dataclass
class ClientStats:
    """What one client process measured inside the window (and a little around it)."""

    requests_done: int = 0          # completed requests with at least one event in the window
    events_in_window: int = 0
    tokens_in_window: float = 0.0
    usage_tokens: int = 0           # over completed requests (any time), with their content events:
    usage_events: int = 0           #   tokens/event = usage_tokens / usage_events
    usage_requests: int = 0
    errors: int = 0
    error_sample: str = ""
    gaps_us: array.array = field(default_factory=lambda: array.array("f"))


class StreamError(Exception):
    pass


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes,
                      stamps: list[int]) -> tuple[int, int | None]:
    """Send one request on a keep-alive connection and read its whole response; appends the arrival time of
    every content event to ``stamps``; returns (status, usage completion_tokens)."""
    clock = time.monotonic_ns
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    usage = None
    if b"transfer-encoding: chunked" not in lower:
        match = re.search(rb"content-length:\s*(\d+)", lower)
        body = await reader.readexactly(int(match.group(1))) if match else b""
        if status != 200:
            raise StreamError(f"HTTP {status}: {body[:200]!r}")
        raise StreamError("a 200 response that is not chunked")
    raw = b""
    pos = 0
    need = -1        # -1: expecting a chunk-size line; >0: bytes of chunk data left; 0: the CRLF after data
    body = b""       # de-chunked SSE text not yet split into events
    done = False
    while not done:
        data = await reader.read(1 << 16)
        if not data:
            raise StreamError("connection closed mid-response")
        now = clock()
        raw = raw[pos:] + data if pos < len(raw) else data
        pos = 0
        parts = []
        while True:
            if need == -1:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(raw[pos:end].split(b";", 1)[0], 16)
                pos = end + 2
                if size == 0:  # last chunk; no trailers expected: the CRLF that ends the message
                    while len(raw) - pos < 2:
                        more = await reader.read(1 << 16)
                        if not more:
                            break
                        raw += more
                    done = True
                    break
                need = size
            elif need > 0:
                take = raw[pos:pos + need]
                parts.append(take)
                pos += len(take)
                need -= len(take)
                if need:
                    break
            else:
                if len(raw) - pos < 2:
                    break
                pos += 2
                need = -1
        if parts:
            body += b"".join(parts)
            if b"\r" in body:
                body = body.replace(b"\r\n", b"\n")
            start = 0
            while (end := body.find(b"\n\n", start)) >= 0:
                event = body[start:end]
                start = end + 2
                if CONTENT.search(event):
                    stamps.append(now)
                elif b'"usage":{' in event:
                    usage = int(COMPLETION_TOKENS.search(event).group(1))
                elif b'"error"' in event:
                    raise StreamError(event[:200].decode(errors="replace"))
            body = body[start:]
    if status != 200:
        raise StreamError(f"HTTP {status}: {body[:200]!r}")
    return status, usage


async def connection_loop(port: int, request: bytes, t_win0: int, t_win1: int, t_hard: int,
                          stats: ClientStats, conn: tuple) -> None:
    reader, writer = conn
    clock = time.monotonic_ns
    try:
        while clock() < t_win1:
            stamps: list[int] = []
            try:
                _, usage = await one_request(reader, writer, request, stamps)
            except (StreamError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                stats.errors += 1
                stats.error_sample = stats.error_sample or f"{type(exc).__name__}: {exc}"[:300]
                writer.close()
                await asyncio.sleep(0.05)
                if clock() >= t_hard:
                    return
                reader, writer = await asyncio.open_connection(HOST, port)
                continue
            if not stamps:
                continue
            inside = [i for i, t in enumerate(stamps) if t_win0 <= t < t_win1]
            if usage is not None:
                stats.usage_tokens += usage
                stats.usage_events += len(stamps)
                stats.usage_requests += 1
            if not inside:
                continue
            per_event = usage / len(stamps) if usage is not None else 1.0
            stats.requests_done += 1
            stats.events_in_window += len(inside)
            stats.tokens_in_window += per_event * len(inside)
            gaps = stats.gaps_us
            for i in inside:
                if i:
                    gaps.append((stamps[i] - stamps[i - 1]) / 1000)
    finally:
        writer.close()


def client_main(port: int, connections: int, request: bytes, warmup_s: float, duration_s: float,
                drain_s: float, pipe) -> None:
    """One client process: open ``connections`` connections, report ready, wait for the start instant, run."""
    try:
        import uvloop  # type: ignore
        uvloop.install()
    except ImportError:
        pass

    async def run() -> ClientStats:
        conns = []
        for i in range(connections):
            conns.append(await asyncio.wait_for(asyncio.open_connection(HOST, port), 10))
            if i % 64 == 63:
                await asyncio.sleep(0)
        pipe.send("ready")
        if not await asyncio.get_running_loop().run_in_executor(None, pipe.poll, 60):
            raise SystemExit("no start signal")
        t0 = pipe.recv()
        t_win0 = t0 + int(warmup_s * 1e9)
        t_win1 = t_win0 + int(duration_s * 1e9)
        t_hard = t_win1 + int(drain_s * 1e9)
        await asyncio.sleep(max(0, t0 - time.monotonic_ns()) / 1e9)
        stats = ClientStats()
        tasks = [asyncio.create_task(connection_loop(port, request, t_win0, t_win1, t_hard, stats, c))
                 for c in conns]
        _, pending = await asyncio.wait(tasks, timeout=max(1.0, (t_hard - time.monotonic_ns()) / 1e9))
        for task in pending:
            task.cancel()
        if pending:
            stats.errors += len(pending)
            stats.error_sample = stats.error_sample or f"{len(pending)} requests still running after the drain"
        await asyncio.gather(*pending, return_exceptions=True)
        return stats

    stats = asyncio.run(run())
    pipe.send((stats.requests_done, stats.events_in_window, stats.tokens_in_window, stats.usage_tokens,
               stats.usage_events, stats.errors, stats.error_sample, stats.gaps_us.tobytes(), stats.usage_requests))


# == Streams: CPU accounting ===============================================================================

def proc_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the whole line
    except (OSError, IndexError, ValueError):
        return None


def session_pids(sid: int) -> tuple[list[int], list[int]]:
    """(frontend pids, mock worker pids) of the daemon's session."""
    frontend, mockers = [], []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if os.getsid(pid) != sid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        (mockers if b"mocker" in cmdline else frontend).append(pid)
    return frontend, mockers


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


Processes = Callable[[], tuple[list[int], list[int]]]
"""What gives the (frontend pids, mock worker pids) of the server under test."""


def snapshot(processes: Processes, clients: list[int]) -> dict:
    frontend, mockers = processes()
    return {"frontend": {p: proc_ticks(p) for p in frontend}, "mockers": {p: proc_ticks(p) for p in mockers},
            "clients": {p: proc_ticks(p) for p in clients}, "machine": machine_ticks(), "t": time.monotonic()}


def delta(before: dict, after: dict) -> dict[int, int]:
    """Ticks per pid between two snapshots (a process that started in between counts from 0)."""
    return {pid: t1 - (before.get(pid) or 0) for pid, t1 in after.items() if t1 is not None}


# == Streams: the daemon and the levels ===================================================================

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_model(port: int, proc: subprocess.Popen | None = None, timeout_s: float = 60) -> str:
    """The first model listed on ``port``; fails early when ``proc`` (the server, if this benchmark started it)
    exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/v1/models", timeout=2) as response:
                models = json.load(response).get("data") or []
            if models:
                return models[0]["id"]
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no model listed on port {port} within {timeout_s:g} s")


def stop_daemon(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    try:  # the group may outlive its leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def run_level(n: int, port: int, processes: Processes, request: bytes, args) -> dict:
    procs_n = max(1, min(args.client_procs, n))
    shares = [n // procs_n + (1 if i < n % procs_n else 0) for i in range(procs_n)]
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    try:
        for share in shares:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(port, share, request, args.warmup, args.duration,
                                                        args.drain, child_end), daemon=True)
            proc.start()
            pipes.append(parent_end)
            procs.append(proc)
        for pipe in pipes:
            if not pipe.poll(60) or pipe.recv() != "ready":
                raise RuntimeError("a client process did not connect within 60 s")
        t0 = time.monotonic_ns() + 100_000_000
        for pipe in pipes:
            pipe.send(t0)
        t_win0 = t0 + int(args.warmup * 1e9)
        t_win1 = t_win0 + int(args.duration * 1e9)
        client_pids = [p.pid for p in procs]
        time.sleep(max(0, t_win0 - time.monotonic_ns()) / 1e9)
        before = snapshot(processes, client_pids)
        time.sleep(max(0, t_win1 - time.monotonic_ns()) / 1e9)
        after = snapshot(processes, client_pids)
        results = []
        for pipe in pipes:
            if not pipe.poll(args.drain + 30):
                raise RuntimeError("a client process did not report")
            results.append(pipe.recv())
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    window_s = after["t"] - before["t"]
    ticks = {kind: delta(before[kind], after[kind]) for kind in ("frontend", "mockers", "clients")}
    busy = (after["machine"][0] - before["machine"][0]) / max(1, after["machine"][1] - before["machine"][1])
    gaps = array.array("f")
    for r in results:
        gaps.frombytes(r[7])
    gaps_ms = sorted(g / 1000 for g in gaps)
    tokens = sum(r[2] for r in results)
    usage_tokens, usage_events = sum(r[3] for r in results), sum(r[4] for r in results)
    requests = sum(r[0] for r in results)
    frontend_s = sum(ticks["frontend"].values()) / CLK_TCK
    return {
        "streams": n, "client_procs": procs_n, "window_s": window_s, "tokens": tokens,
        "tokens_per_s": tokens / window_s, "requests": requests,
        "events_per_request": usage_events / max(1, sum(r[8] for r in results)),
        "tokens_per_event": usage_tokens / usage_events if usage_events else float("nan"),
        "usage_events": usage_events, "usage_tokens": usage_tokens,
        "frontend_us_per_token": frontend_s / tokens * 1e6 if tokens else float("nan"),
        "frontend_cores": frontend_s / window_s, "frontend_pids": len(ticks["frontend"]),
        "mock_cores": sum(ticks["mockers"].values()) / CLK_TCK / window_s,
        "client_cores": sum(ticks["clients"].values()) / CLK_TCK / window_s,
        "client_max_pct": max(ticks["clients"].values(), default=0) / CLK_TCK / window_s * 100,
        "machine_busy_pct": busy * 100,
        "other_cores": busy * (os.cpu_count() or 1) - sum(sum(t.values()) for t in ticks.values()) / CLK_TCK / window_s,
        "itl_p50_ms": pct(gaps_ms, 0.5), "itl_p99_ms": pct(gaps_ms, 0.99),
        "itl_mean_ms": sum(gaps_ms) / len(gaps_ms) if gaps_ms else float("nan"),
        "itl_zero_pct": 100 * sum(1 for g in gaps_ms if g < 0.05) / max(1, len(gaps_ms)),
        "gaps": len(gaps_ms), "errors": sum(r[5] for r in results),
        "error_sample": next((r[6] for r in results if r[6]), ""),
    }


def streams_table(args) -> tuple[list[dict], str, float]:
    port, registry = free_port(), free_port()
    command = ["./scripts/serve", "--http-port", str(port), "--registry-endpoint", f"tcp://{HOST}:{registry}",
               "--mock-workers", "2", "--mock-speedup-ratio", "1", "--router-mode", "round_robin",
               "--mock-extra-models", "none", *args.serve_arg]
    with open(args.daemon_log, "wb") as log:  # the child keeps its own descriptor
        daemon = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        model = wait_for_model(port, daemon)
        rows, idle_cores = run_levels(port, model, lambda: session_pids(daemon.pid), args)
    finally:
        stop_daemon(daemon)
    return rows, " ".join(command), idle_cores


def run_levels(port: int, model: str, processes: Processes, args) -> tuple[list[dict], float]:
    """The idle server's CPU, then each level of ``--streams``; prints a line per level."""
    request = request_bytes(port, model, args.max_tokens)
    time.sleep(1.0)  # let the workers' registration settle
    before = snapshot(processes, [])
    time.sleep(args.idle)
    after = snapshot(processes, [])
    idle_cores = sum(delta(before["frontend"], after["frontend"]).values()) / CLK_TCK / (after["t"] - before["t"])
    print(f"  idle frontend (no requests, {args.idle:g} s): {idle_cores:.3f} cores", flush=True)
    rows = []
    for n in args.streams:
        row = run_level(n, port, processes, request, args)
        rows.append(row)
        print(f"  {n:>5} streams: {row['tokens_per_s']:,.0f} tok/s, frontend "
              f"{row['frontend_us_per_token']:.1f} us/token ({row['frontend_cores']:.2f} cores), ITL p99 "
              f"{row['itl_p99_ms']:.2f} ms, client {row['client_cores']:.2f} cores "
              f"(max proc {row['client_max_pct']:.0f} %), machine {row['machine_busy_pct']:.0f} % busy, "
              f"errors {row['errors']}", flush=True)
        if row["error_sample"]:
            print(f"        first error: {row['error_sample']}", flush=True)
        time.sleep(1.0)
    return rows, idle_cores


def dynamo_streams_table(args) -> tuple[list[dict], float]:
    """The stream levels against NVIDIA Dynamo's frontend, started and stopped with the peer's scripts."""
    peer = os.path.abspath(args.peer_dynamo)
    port = free_port()
    env = {**os.environ, "HTTP_PORT": str(port), "NUM_MOCKERS": "2", "ROUTER_MODE": "round-robin", "SPEEDUP": "1",
           "DYN_LOG": "warn"}
    pid_dir = os.path.join(os.environ.get("PEER_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dynamo-peer"), "run", "pids")
    try:  # the stop script ends what the start script recorded, also after a start that failed halfway
        subprocess.run([os.path.join(peer, "start-dynamo.sh")], env=env, capture_output=True, timeout=300,
                       check=True)
        model = wait_for_model(port, timeout_s=90)

        def processes() -> tuple[list[int], list[int]]:
            frontend, mockers = [], []
            for name in os.listdir(pid_dir):
                with open(os.path.join(pid_dir, name)) as f:
                    pid = int(f.read().strip())
                if name == "frontend.pid":
                    frontend.append(pid)
                elif name.startswith("mocker"):
                    mockers.append(pid)
            return frontend, mockers

        return run_levels(port, model, processes, args)
    finally:
        subprocess.run([os.path.join(peer, "stop-dynamo.sh")], capture_output=True, timeout=120)


def format_ratios(ours: list[dict], dynamo: list[dict]) -> str:
    lines = ["| streams | frontend CPU / token, ours (µs) | Dynamo (µs) | ours / Dynamo | tokens/s, ours | Dynamo "
             "| ITL p99 ours / Dynamo (ms) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for o, d in zip(ours, dynamo):
        lines.append(f"| {o['streams']:,} | {o['frontend_us_per_token']:.1f} | {d['frontend_us_per_token']:.1f} "
                     f"| {o['frontend_us_per_token'] / d['frontend_us_per_token']:.2f} | {o['tokens_per_s']:,.0f} "
                     f"| {d['tokens_per_s']:,.0f} | {o['itl_p99_ms']:.2f} / {d['itl_p99_ms']:.2f} |")
    return "\n".join(lines)


def format_streams(rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        (f"| streams | tokens/s | events/req | tokens/event | frontend CPU / token (µs) | vs {base['streams']} "
         f"| ITL p50 / mean (ms) | ITL p99 (ms) | vs {base['streams']} | frontend cores | mock cores "
         "| client cores (busiest proc) | machine busy (other cores) | errors |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['streams']:,} | {r['tokens_per_s']:,.0f} | {r['events_per_request']:.1f} "
            f"| {r['tokens_per_event']:.2f} | {r['frontend_us_per_token']:.1f} "
            f"| {r['frontend_us_per_token'] / base['frontend_us_per_token']:.2f}x | {r['itl_p50_ms']:.2f} / {r['itl_mean_ms']:.2f} "
            f"| {r['itl_p99_ms']:.2f} | {r['itl_p99_ms'] / base['itl_p99_ms']:.2f}x | {r['frontend_cores']:.2f} "
            f"| {r['mock_cores']:.2f} | {r['client_cores']:.2f} ({r['client_max_pct']:.0f} %) "
            f"| {r['machine_busy_pct']:.0f} % ({r['other_cores']:.2f}) | {r['errors']} |")
    return "\n".join(lines)


# == Routing ================================================================================================

@dataclass
class Model:
    """The part of a served model the router reads (frontend.router.select.Candidate)."""

    name: str
    instance_ids: list[str]
    block_size: int
    total_kv_blocks: dict[str, int]


def routing_level(n: int, args, rng: random.Random) -> dict:
    from frontend.kv import KvIndexReader, KvIndexWriter, block_hashes
    from frontend.router.select import Router, RouterSettings

    bs = args.block_size
    pool_size = max(args.pool_prompts, 1)
    prompts = [array.array("I", (rng.randrange(150_000) for _ in range(args.prompt_tokens)))
               for _ in range(pool_size)]
    hashes = [block_hashes(p, bs) for p in prompts]
    nblocks = len(hashes[0])
    capacity = n * (args.prompts_per_worker * nblocks + args.filler_blocks) + 1024
    # The daemon's --kv-index-max-workers (default 64; up to 256): a reader's stats() walks every slot.
    writer = KvIndexWriter(capacity_blocks=capacity, max_workers=max(n, args.index_max_workers))
    reader = None
    try:
        ids = [f"worker-{i}" for i in range(n)]
        slots = [writer.assign_slot(i) for i in ids]
        for slot in slots:
            for q in rng.sample(range(pool_size), min(args.prompts_per_worker, pool_size)):
                writer.store(slot, hashes[q][:rng.randrange(1, nblocks + 1)])
            filler = [rng.getrandbits(64) for _ in range(args.filler_blocks)]
            for i in range(0, len(filler), 64):
                writer.store(slot, filler[i:i + 64])
        reader = KvIndexReader(writer.name)
        for slot in slots:  # some requests in flight on every worker, as the routers account them
            requests = rng.randrange(0, 9)
            reader.add_load(slot, requests, requests * rng.randrange(50, 200), rng.randrange(0, 2) * 2000)
        model = Model("tiny", ids, bs, {i: 16_384 for i in ids})
        router = Router(RouterSettings(mode="kv"), index=reader)
        queries = [hashes[rng.randrange(pool_size)].tobytes() for _ in range(args.decisions)]
        isl = args.prompt_tokens
        clock = time.perf_counter_ns
        for q in queries[:200]:  # warm-up (also fills the router's slot map)
            router.finish(router.pick(model, q, isl))
        decision, matches = [], []
        overlaps = 0
        now = time.monotonic()
        for q in queries:
            t0 = clock()
            route = router.pick(model, q, isl)
            t1 = clock()
            router.finish(route)
            decision.append((t1 - t0) / 1000)
            overlaps += route.overlap_blocks
            t0 = clock()
            reader.find_matches(q, now, 10.0)
            matches.append((clock() - t0) / 1000)
        decision.sort()
        matches.sort()
        stats = writer.stats()
        return {"workers": n, "entries": stats["live_entries"], "dropped": stats["dropped_inserts"],
                "p50": pct(decision, .5), "p99": pct(decision, .99), "fm_p50": pct(matches, .5),
                "fm_p99": pct(matches, .99), "overlap": overlaps / len(queries), "blocks": nblocks}
    finally:
        if reader is not None:
            reader.close()
        writer.close()


def hashing_us(args, rng: random.Random) -> tuple[float, float]:
    from frontend.kv import block_hashes
    tokens = [[rng.randrange(150_000) for _ in range(args.prompt_tokens)] for _ in range(20)]
    out = []
    for t in tokens * 50:
        t0 = time.perf_counter_ns()
        block_hashes(t, args.block_size).tobytes()
        out.append((time.perf_counter_ns() - t0) / 1000)
    out.sort()
    return pct(out, .5), pct(out, .99)


def format_routing(rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        (f"| workers | index entries | decision p50 (µs) | vs {base['workers']} | decision p99 (µs) "
         f"| vs {base['workers']} | of which find_matches p50 / p99 (µs) | mean overlap (blocks) |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['entries']:,} | {r['p50']:.1f} | {r['p50'] / base['p50']:.2f}x "
                     f"| {r['p99']:.1f} | {r['p99'] / base['p99']:.2f}x | {r['fm_p50']:.1f} / {r['fm_p99']:.1f} "
                     f"| {r['overlap']:.0f} of {r['blocks']} |")
    return "\n".join(lines)


# == Main ===================================================================================================

def int_list(text: str) -> list[int]:
    return [int(v.replace("_", "")) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_argument_group("streams")
    group.add_argument("--streams", type=int_list, default=[16, 64, 256, 1024], help="concurrency levels")
    group.add_argument("--duration", type=float, default=15.0, help="measured seconds per level")
    group.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each window")
    group.add_argument("--drain", type=float, default=30.0, help="most seconds in-flight requests get to end")
    group.add_argument("--client-procs", type=int, default=2, help="client processes sending the load")
    group.add_argument("--max-tokens", type=int, default=64)
    group.add_argument("--idle", type=float, default=3.0, help="seconds the idle daemon's CPU is measured")
    group.add_argument("--serve-arg", action="append", default=[], help="extra flag for ./scripts/serve")
    group.add_argument("--daemon-log", default="/tmp/bench-scaling-daemon.log")
    group.add_argument("--skip-streams", action="store_true")
    group.add_argument("--peer-dynamo", metavar="DIR", help="also run the stream levels against NVIDIA Dynamo's "
                       "frontend, started with DIR/start-dynamo.sh (e.g. ../shared/peers/dynamo)")
    group = parser.add_argument_group("routing")
    group.add_argument("--workers", type=int_list, default=[8, 64, 256], help="worker counts")
    group.add_argument("--decisions", type=int, default=3000, help="timed decisions per worker count")
    group.add_argument("--prompt-tokens", type=int, default=2000)
    group.add_argument("--block-size", type=int, default=16)
    group.add_argument("--pool-prompts", type=int, default=64, help="shared prompts workers hold prefixes of")
    group.add_argument("--prompts-per-worker", type=int, default=8)
    group.add_argument("--filler-blocks", type=int, default=2000, help="unrelated blocks per worker")
    group.add_argument("--index-max-workers", type=int, default=64,
                       help="worker slots of the index (the daemon's default), raised to the worker count")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--skip-routing", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"bench.scaling, {datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}", flush=True)
    if not args.skip_routing:
        print(f"Routing: {args.prompt_tokens}-token prompts, block size {args.block_size}, "
              f"prefixes of {args.prompts_per_worker} of {args.pool_prompts} shared prompts + {args.filler_blocks} filler blocks per worker", flush=True)
        rng = random.Random(args.seed)
        rows = [routing_level(n, args, rng) for n in args.workers]
        h50, h99 = hashing_us(args, rng)
        print(format_routing(rows))
        print(f"(hashing the {args.prompt_tokens}-token prompt into block hashes, not in the decision: "
              f"p50 {h50:.1f} µs, p99 {h99:.1f} µs)", flush=True)
    if not args.skip_streams:
        print(f"Streams: {args.warmup:g} s warm-up + {args.duration:g} s measured per level, "
              f"{args.client_procs} client processes, max_tokens {args.max_tokens}", flush=True)
        rows, command, idle_cores = streams_table(args)
        print(f"daemon: {command}")
        print(f"idle frontend: {idle_cores:.3f} cores")
        print(format_streams(rows))
        print("(ITL: share of gaps under 0.05 ms, i.e. events read together: "
              + ", ".join(f"{r['streams']}: {r['itl_zero_pct']:.0f} %" for r in rows) + ")")
        if args.peer_dynamo:
            print("NVIDIA Dynamo's frontend, same levels:", flush=True)
            dynamo_rows, dynamo_idle = dynamo_streams_table(args)
            print(f"idle frontend: {dynamo_idle:.3f} cores")
            print(format_streams(dynamo_rows))
            print(format_ratios(rows, dynamo_rows))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
