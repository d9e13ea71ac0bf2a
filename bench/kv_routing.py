"""KV-aware routing experiment: multi-turn sessions with long private system prompts, round_robin vs kv.

Workload (issue 3's acceptance test): ``--sessions`` sessions, each with its own ~``--system-words``-word
system prompt, ``--turns`` turns each (every turn resends the whole history plus a new user message, as
chat clients do), turns of different sessions interleaved at random, ``--concurrency`` streams at once,
against a frontend with ``--mock-workers`` mock workers at ``--speedup`` (1 = realistic timing).

For each router mode the script starts the daemon on free loopback ports, runs the workload and reports
the cached-token ratio (sum of ``usage.prompt_tokens_details.cached_tokens`` over sum of prompt tokens, as
the workers' real prefix caches report them) and TTFT (time to the first content chunk).

With ``--frontends N`` (N > 1) the script starts its own etcd (Debian's ``etcd-server``), N frontend daemons
and the workers on it (``--discovery-backend etcd``), and sends the turns to the frontends in turn (round-robin
by request, as a load balancer would), so each session's turns reach different frontends: every frontend follows
every worker's KV events and reported load, and the cached-token ratio shows whether that is enough.

With ``--prefill-workers N`` (mock workers) the model is served disaggregated: N mock prefill workers beside the
``--mock-workers`` decode workers. The cached-token ratio is then the prefill workers' (the decode worker reports
the prefill side's hit, as vLLM does), and the report adds how many requests each prefill and each decode worker
took (from the responses' ``nvext.worker_id``).

With ``--engine vllm --model-dir DIR`` the workers are ``python -m frontend.vllm`` (vLLM's CPU build; make a
tiny model with ``python -m frontend.engines.vllm.tiny_model DIR``), started afresh for each mode so that no prefix
cache carries over; the cached tokens are then vLLM's own ``num_cached_tokens``.

    python bench/kv_routing.py                 # round_robin vs kv with the issue's settings
    python bench/kv_routing.py --modes kv --sessions 4
    python bench/kv_routing.py --engine vllm --model-dir /tmp/tiny-llm --workers 2 --system-words 300
    python bench/kv_routing.py --modes kv --frontends 2          # two frontends on etcd, one workload
    python bench/kv_routing.py --modes kv --prefill-workers 2 --mock-workers 2   # disaggregated
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "frontend", "engines", "mocker", "corpus.txt")


@dataclass
class Session:
    system: str
    turns_left: int
    history: list[dict] = field(default_factory=list)
    busy: bool = False


@dataclass
class Result:
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int
    error: str | None = None
    prefill_worker: str = ""  # nvext.worker_id of the response
    decode_worker: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_sessions(count: int, words: int, turns: int, seed: int) -> list[Session]:
    with open(CORPUS, encoding="utf-8") as handle:
        vocabulary = handle.read().split()
    rng = random.Random(seed)
    return [Session(f"Session {i}. " + " ".join(rng.choice(vocabulary) for _ in range(words)), turns)
            for i in range(count)]


async def one_turn(client: httpx.AsyncClient, url: str, model: str, session: Session, max_tokens: int) -> Result:
    session.history.append({"role": "user", "content": f"Question {len(session.history) // 2 + 1}: tell me more."})
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
            "stream_options": {"include_usage": True}, "nvext": {"extra_fields": ["worker_id"]},
            "messages": [{"role": "system", "content": session.system}, *session.history]}
    start = time.perf_counter()
    ttft, text, usage, workers = None, [], None, {}
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            return Result(0.0, 0, 0, f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            workers = chunk.get("nvext", {}).get("worker_id", workers)
            for choice in chunk.get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    text.append(content)
    session.history.append({"role": "assistant", "content": "".join(text)})
    details = (usage or {}).get("prompt_tokens_details") or {}
    return Result(ttft or 0.0, (usage or {}).get("prompt_tokens", 0), details.get("cached_tokens", 0),
                  prefill_worker=workers.get("prefill_worker_id", ""), decode_worker=workers.get("decode_worker_id", ""))


async def run_workload(urls: list[str], model: str, sessions: list[Session], concurrency: int, max_tokens: int,
                       seed: int) -> list[Result]:
    """Every session's turns, ``concurrency`` at once; request i goes to ``urls[i % len(urls)]``."""
    rng = random.Random(seed)
    sent = itertools.count()
    results: list[Result] = []
    ready = asyncio.Condition()

    def pick() -> Session | None:
        choices = [s for s in sessions if s.turns_left and not s.busy]
        return rng.choice(choices) if choices else None

    async def stream_slot(client: httpx.AsyncClient) -> None:
        while True:
            async with ready:
                session = pick()
                while session is None:
                    if not any(s.turns_left for s in sessions):
                        return
                    await ready.wait()
                    session = pick()
                session.busy, session.turns_left = True, session.turns_left - 1
            url = urls[next(sent) % len(urls)]
            results.append(await one_turn(client, url, model, session, max_tokens))
            async with ready:
                session.busy = False
                ready.notify_all()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(stream_slot(client) for _ in range(concurrency)))
    return results


def start_daemon(mode: str, workers: int, speedup: float, vllm_model: str | None = None, prefill_workers: int = 0
                 ) -> tuple[list[subprocess.Popen], int]:
    """The frontend with ``workers`` mock workers (decode workers beside ``prefill_workers`` mock prefill workers,
    if any), or (``vllm_model``) with as many vLLM workers beside it; returns the processes (the daemon first) and
    the HTTP port once every worker is registered."""
    port, registry = free_port(), f"tcp://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
            "--registry-endpoint", registry, "--mock-workers", "0" if vllm_model else str(workers),
            "--mock-prefill-workers", str(prefill_workers),
            "--mock-speedup-ratio", str(speedup), "--mock-extra-models", "none", "--router-mode", mode,
            "--workers", "1"]
    workers += prefill_workers
    processes = [_spawn(argv)]
    if vllm_model:
        processes += [_spawn([sys.executable, "-m", "frontend.vllm", "--model", vllm_model, "--registry-endpoint",
                              registry, "--block-size", "32", "--max-model-len", "4096"],
                             {"VLLM_CPU_KVCACHE_SPACE": "2"}) for _ in range(workers)]
    deadline = time.monotonic() + (300 if vllm_model else 60)
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
            if len(health.get("instances", [])) == workers:
                return processes, port
        except (httpx.HTTPError, ValueError):
            pass
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.2)
    stop_daemon(processes)
    raise RuntimeError(f"the frontend ({mode}) or its workers did not come up")


def start_frontends_on_etcd(mode: str, frontends: int, workers: int, speedup: float
                            ) -> tuple[list[subprocess.Popen], list[int]]:
    """An etcd, ``frontends`` frontend daemons and ``workers`` mock workers, all discovering each other through it;
    returns the processes (etcd first, workers last) and the frontends' HTTP ports once each lists every worker."""
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("--frontends > 1 needs the etcd binary (apt-get install etcd-server)")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    data_dir = tempfile.mkdtemp(prefix="kv-routing-etcd-")
    processes = [_spawn([etcd, "--name", "default", "--data-dir", data_dir, "--listen-client-urls", client,
                         "--advertise-client-urls", client, "--listen-peer-urls", peer,
                         "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}",
                         "--log-level", "warn", "--logger", "zap"])]
    discovery = ["--discovery-backend", "etcd", "--etcd-endpoints", client]
    ports = [free_port() for _ in range(frontends)]
    try:
        _wait(lambda: httpx.get(client + "/health", timeout=1).json().get("health") == "true", 20, processes)
        processes += [_spawn([sys.executable, "-m", "frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
                              *discovery, "--mock-workers", "0", "--router-mode", mode, "--workers", "1"])
                      for port in ports]
        processes += [_spawn([sys.executable, "-m", "frontend.mocker", *discovery, "--speedup-ratio", str(speedup)])
                      for _ in range(workers)]
        for port in ports:
            _wait(lambda port=port: len(httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                                        .get("instances", [])) == workers, 60, processes)
    except BaseException:
        stop_daemon(processes)
        raise
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)  # etcd keeps its open files; nothing is read back
    return processes, ports


def _wait(ready, timeout_s: float, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (httpx.HTTPError, ValueError):
            pass
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.2)
    raise RuntimeError("a frontend, a worker or etcd did not come up")


def _spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})})


def stop_daemon(processes: list[subprocess.Popen]) -> None:
    """SIGTERM the workers, then the daemon(s) (then etcd); SIGKILL what is still there after 20 s."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def summarize(mode: str, results: list[Result], elapsed_s: float) -> dict:
    good = [r for r in results if r.error is None]
    prompt = sum(r.prompt_tokens for r in good)
    ttfts = sorted(r.ttft_s for r in good)
    return {"mode": mode, "requests": len(results), "errors": len(results) - len(good),
            "cached_token_ratio": sum(r.cached_tokens for r in good) / prompt if prompt else 0.0,
            "ttft_mean_ms": statistics.fmean(ttfts) * 1000 if ttfts else float("nan"),
            "ttft_p50_ms": ttfts[len(ttfts) // 2] * 1000 if ttfts else float("nan"),
            "ttft_p90_ms": ttfts[int(len(ttfts) * 0.9)] * 1000 if ttfts else float("nan"),
            "mean_prompt_tokens": prompt / len(good) if good else 0, "elapsed_s": elapsed_s,
            "first_error": next((r.error for r in results if r.error), None), **_worker_choices(good)}


def _worker_choices(results: list[Result]) -> dict:
    """Requests per prefill and per decode worker, when some were disaggregated (most first)."""
    if not any(r.prefill_worker != r.decode_worker for r in results):
        return {}
    return {"prefill_choices": sorted(Counter(r.prefill_worker for r in results).values(), reverse=True),
            "decode_choices": sorted(Counter(r.decode_worker for r in results).values(), reverse=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="round_robin,kv")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--system-words", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mock-workers", "--workers", type=int, default=4, help="workers of the model")
    parser.add_argument("--engine", choices=("mock", "vllm"), default="mock")
    parser.add_argument("--model-dir", help="--engine vllm: the model directory the vLLM workers load")
    parser.add_argument("--speedup", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frontends", type=int, default=1, help="frontend daemons (> 1: on an etcd of their own)")
    parser.add_argument("--prefill-workers", type=int, default=0,
                        help="mock prefill workers (disaggregated serving; the --mock-workers decode)")
    args = parser.parse_args(argv)
    if args.engine == "vllm" and not args.model_dir:
        parser.error("--engine vllm needs --model-dir")
    if (args.frontends > 1 or args.prefill_workers) and args.engine == "vllm":
        parser.error("--frontends > 1 and --prefill-workers run mock workers only")
    if args.frontends > 1 and args.prefill_workers:
        parser.error("--prefill-workers runs one frontend")
    vllm_model = os.path.abspath(args.model_dir) if args.engine == "vllm" else None
    model = os.path.basename(vllm_model.rstrip("/")) if vllm_model else "tiny"
    rows = []
    for mode in args.modes.split(","):
        sessions = make_sessions(args.sessions, args.system_words, args.turns, args.seed)
        if args.frontends > 1:
            processes, ports = start_frontends_on_etcd(mode, args.frontends, args.mock_workers, args.speedup)
        else:
            processes, port = start_daemon(mode, args.mock_workers, args.speedup, vllm_model, args.prefill_workers)
            ports = [port]
        try:
            start = time.perf_counter()
            urls = [f"http://127.0.0.1:{port}/v1/chat/completions" for port in ports]
            results = asyncio.run(run_workload(urls, model, sessions, args.concurrency, args.max_tokens, args.seed))
            rows.append({**summarize(mode, results, time.perf_counter() - start), "frontends": len(ports)})
        finally:
            stop_daemon(processes)
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) == 2 and rows[0]["ttft_mean_ms"]:
        print(f"{rows[1]['mode']}/{rows[0]['mode']}: mean TTFT ratio "
              f"{rows[1]['ttft_mean_ms'] / rows[0]['ttft_mean_ms']:.2f}, cached-token ratio "
              f"{rows[0]['cached_token_ratio']:.2f} -> {rows[1]['cached_token_ratio']:.2f}")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
