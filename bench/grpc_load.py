"""gRPC (KServe ModelInfer / ModelStreamInfer) next to HTTP (/v1/completions) under the same load.

Starts the daemon on free loopback ports with ``--kserve-grpc-server``, mock workers without simulated delay
(``--mock-speedup-ratio 1000000``), then runs four scenarios for ``--duration`` seconds each (after a short
warm-up), ``--concurrency`` requests in flight at all times:

- unary: ``max_tokens=1`` (HTTP POST; gRPC ModelInfer);
- stream: ``--stream-tokens`` tokens with ``ignore_eos`` (HTTP SSE; gRPC ModelStreamInfer with streaming=true).

HTTP goes over a pool of ``--concurrency`` keep-alive connections; gRPC over ``--grpc-channels`` HTTP/2
connections (requests spread round-robin), since one connection stays on one gRPC server process. The load
generator is one Python process (uvloop) on the same machine: its own CPU use is part of every figure.

    python bench/grpc_load.py                       # 64 concurrent, 10 s per scenario, both protocols
    python bench/grpc_load.py --duration 5 --http-workers 2 --grpc-workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
import grpc
import msgspec
import uvloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from frontend.grpc.proto import kserve_pb2 as pb  # noqa: E402
from frontend.grpc.proto.kserve_pb2_grpc import GRPCInferenceServiceStub  # noqa: E402

MODEL = "tiny"
PROMPT = "Write a short paragraph about lighthouses."
WARMUP_S = 1.0
STARTUP_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """One scenario's result; ``cpu_s``: CPU seconds of the daemon's processes by title in the window."""

    name: str
    requests: int
    errors: int
    tokens: int
    elapsed_s: float
    latencies_s: list[float]
    cpu_s: dict[str, float]

    HEADER = (f"{'scenario':<12} {'req/s':>9} {'tokens/s':>10} {'p50 ms':>7} {'errors':>6} "
              f"{'door CPU ms/req':>15} {'all CPU ms/req':>14}")

    def row(self) -> str:
        p50 = statistics.median(self.latencies_s) * 1000 if self.latencies_s else float("nan")
        door = self.cpu_s.get("dyn-grpc" if self.name.startswith("grpc") else "dyn-http", 0.0)
        per_request = 1000 / max(self.requests, 1)
        return (f"{self.name:<12} {self.requests / self.elapsed_s:>9,.0f} {self.tokens / self.elapsed_s:>10,.0f} "
                f"{p50:>7.2f} {self.errors:>6} {door * per_request:>15.3f} "
                f"{sum(self.cpu_s.values()) * per_request:>14.3f}")


def tree_cpu_s(root: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of ``root`` and its descendants, summed by process title."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, usage = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                head, _, rest = handle.read().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        parents[int(entry)] = int(fields[1])
        usage[int(entry)] = (head.partition("(")[2], (int(fields[11]) + int(fields[12])) / tick)
    totals: dict[str, float] = {}
    for pid, (title, seconds) in usage.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            totals[title] = totals.get(title, 0.0) + seconds
    return totals


# ---- the daemon --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(args: argparse.Namespace) -> tuple[subprocess.Popen, int, int]:
    http_port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "frontend", "--http-host", "127.0.0.1", "--http-port", str(http_port),
            "--registry-endpoint", f"tcp://127.0.0.1:{free_port()}", "--mock-workers", str(args.mock_workers),
            "--mock-speedup-ratio", "1000000", "--mock-extra-models", "none", "--workers", str(args.http_workers),
            "--kserve-grpc-server",
            "--kserve-grpc-port", str(grpc_port), "--kserve-grpc-workers", str(args.grpc_workers)]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if asyncio.run(_ready(http_port, grpc_port, args.mock_workers)):
            return process, http_port, grpc_port
        time.sleep(0.2)
    stop_daemon(process)
    raise RuntimeError("the frontend did not come up")


async def _ready(http_port: int, grpc_port: int, workers: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{http_port}/health") as response:
                if response.status != 200 or len((await response.json())["instances"]) < workers:
                    return False
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = await GRPCInferenceServiceStub(channel).ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=1)
            return reply.ready
    except (aiohttp.ClientError, grpc.aio.AioRpcError, OSError):
        return False


def stop_daemon(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---- one request per protocol and mode ---------------------------------------------------------------------


class HttpLoad:
    """POST /v1/completions over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, port: int, stream_tokens: int) -> None:
        self.session = session
        self.url = f"http://127.0.0.1:{port}/v1/completions"
        self.unary_body = msgspec.json.encode({"model": MODEL, "prompt": PROMPT, "max_tokens": 1})
        self.stream_body = msgspec.json.encode({"model": MODEL, "prompt": PROMPT, "max_tokens": stream_tokens,
                                                "ignore_eos": True, "stream": True})
        self.stream_tokens = stream_tokens
        self.headers = {"content-type": "application/json"}

    async def unary(self) -> int:
        async with self.session.post(self.url, data=self.unary_body, headers=self.headers) as response:
            body = await response.read()
            if response.status != 200 or b'"finish_reason":"length"' not in body:
                raise RuntimeError(f"HTTP {response.status}")
        return 1

    async def stream(self) -> int:
        async with self.session.post(self.url, data=self.stream_body, headers=self.headers) as response:
            body = await response.read()
            if response.status != 200 or not body.endswith(b"data: [DONE]\n\n") or b'"length"' not in body:
                raise RuntimeError(f"HTTP {response.status}")
        return self.stream_tokens


class GrpcLoad:
    """ModelInfer and ModelStreamInfer over a few channels, used round-robin."""

    def __init__(self, channels: list[grpc.aio.Channel], stream_tokens: int) -> None:
        self.stubs = [GRPCInferenceServiceStub(channel) for channel in channels]
        self.next = 0
        self.unary_request = self._request(max_tokens=1, stream=False)
        self.stream_request = self._request(max_tokens=stream_tokens, stream=True)
        self.stream_tokens = stream_tokens

    @staticmethod
    def _request(max_tokens: int, stream: bool) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
            PROMPT.encode())
        request.inputs.add(name="max_tokens", datatype="INT32", shape=[1]).contents.int_contents.append(max_tokens)
        request.inputs.add(name="ignore_eos", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
        request.inputs.add(name="streaming", datatype="BOOL", shape=[1]).contents.bool_contents.append(stream)
        return request

    def _stub(self) -> GRPCInferenceServiceStub:
        self.next = (self.next + 1) % len(self.stubs)
        return self.stubs[self.next]

    async def unary(self) -> int:
        response = await self._stub().ModelInfer(self.unary_request)
        if response.outputs[1].contents.bytes_contents[0] != b"length":
            raise RuntimeError("unexpected finish reason")
        return 1

    async def stream(self) -> int:
        finish = b""
        async for reply in self._stub().ModelStreamInfer(iter([self.stream_request])):
            if reply.error_message:
                raise RuntimeError(reply.error_message)
            finish = reply.infer_response.outputs[1].contents.bytes_contents[0]
        if finish != b"length":
            raise RuntimeError("stream ended without finish reason")
        return self.stream_tokens


# ---- driving -----------------------------------------------------------------------------------------------


async def drive(name: str, call: Callable[[], Awaitable[int]], concurrency: int, duration_s: float,
                daemon_pid: int) -> Outcome:
    """``concurrency`` loops calling ``call`` back to back; counts what completes inside the window."""
    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0, "tokens": 0}
    measuring = False
    end = time.perf_counter() + WARMUP_S + duration_s

    async def loop() -> None:
        while (start := time.perf_counter()) < end:
            try:
                tokens = await call()
            except (RuntimeError, grpc.aio.AioRpcError, aiohttp.ClientError) as exc:
                if measuring:
                    counts["errors"] += 1
                    if counts["errors"] == 1:
                        print(f"{name}: first error: {exc}", file=sys.stderr)
                continue
            if measuring and time.perf_counter() < end:
                latencies.append(time.perf_counter() - start)
                counts["requests"] += 1
                counts["tokens"] += tokens

    tasks = [asyncio.ensure_future(loop()) for _ in range(concurrency)]
    await asyncio.sleep(WARMUP_S)
    measuring, started, cpu_before = True, time.perf_counter(), tree_cpu_s(daemon_pid)
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    cpu = {title: seconds - cpu_before.get(title, 0.0) for title, seconds in tree_cpu_s(daemon_pid).items()}
    await asyncio.gather(*tasks)
    return Outcome(name, counts["requests"], counts["errors"], counts["tokens"], end - started, latencies, cpu)


async def run_all(args: argparse.Namespace, daemon_pid: int, http_port: int, grpc_port: int) -> list[Outcome]:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(args.grpc_channels)]
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            http, grpc_load = HttpLoad(session, http_port, args.stream_tokens), GrpcLoad(channels, args.stream_tokens)
            scenarios = [("http unary", http.unary), ("grpc unary", grpc_load.unary),
                         ("http stream", http.stream), ("grpc stream", grpc_load.stream)]
            return [await drive(name, call, args.concurrency, args.duration, daemon_pid) for name, call in scenarios]
    finally:
        for channel in channels:
            await channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    parser.add_argument("--stream-tokens", type=int, default=128)
    parser.add_argument("--mock-workers", type=int, default=2)
    parser.add_argument("--http-workers", type=int, default=1, help="Granian worker processes (--workers)")
    parser.add_argument("--grpc-workers", type=int, default=1, help="gRPC server processes")
    parser.add_argument("--grpc-channels", type=int, default=4, help="client HTTP/2 connections for gRPC")
    args = parser.parse_args(argv)
    process, http_port, grpc_port = start_daemon(args)
    try:
        outcomes = uvloop.run(run_all(args, process.pid, http_port, grpc_port))
    finally:
        stop_daemon(process)
    print(f"{args.concurrency} concurrent, {args.duration:.0f} s each, {args.mock_workers} mock workers, "
          f"{args.http_workers} HTTP / {args.grpc_workers} gRPC server processes, {os.cpu_count()} CPUs")
    print(Outcome.HEADER)
    for outcome in outcomes:
        print(outcome.row())
    return 1 if any(outcome.errors for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
