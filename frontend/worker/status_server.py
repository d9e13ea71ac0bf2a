"""A worker's own HTTP status endpoint (``--system-port``, as Dynamo's ``DYN_SYSTEM_PORT``): ``GET /metrics``
(Prometheus text) and ``GET /health`` (JSON), for the fleet's scrapers and probes. Off unless a port is given.

It reads one request per connection (request line and headers, at most ``MAX_HEAD_BYTES``, within
``READ_TIMEOUT_S``), answers and closes; anything else is a 404 or 405. The engine supplies its rows through
``Engine.worker_metrics`` (e.g. prompt tokens by source: computed, local cache hit, transferred from a prefill
worker).
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable, NamedTuple

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_S = 5.0


class MetricRow(NamedTuple):
    """One sample: ``kind`` is counter or gauge; ``labels`` are (name, value) pairs."""

    name: str
    help: str
    kind: str
    labels: tuple[tuple[str, str], ...]
    value: float


def render_metrics(rows: list[MetricRow]) -> bytes:
    """Prometheus text exposition of ``rows`` (HELP and TYPE once per name, in first-seen order)."""
    lines: list[str] = []
    described: set[str] = set()
    for row in rows:
        if row.name not in described:
            described.add(row.name)
            lines += [f"# HELP {row.name} {row.help}", f"# TYPE {row.name} {row.kind}"]
        labels = ",".join(f'{key}="{_escape(value)}"' for key, value in row.labels)
        lines.append(f"{row.name}{{{labels}}} {row.value:g}" if labels else f"{row.name} {row.value:g}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class StatusServer:
    """Serves ``/metrics`` from ``metrics()`` and ``/health`` from ``health()`` on ``host:port``."""

    def __init__(self, host: str, port: int, metrics: Callable[[], list[MetricRow]],
                 health: Callable[[], dict]) -> None:
        self.host = host
        self.port = port
        self._metrics = metrics
        self._health = health
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen (``port`` 0 picks a free one; ``self.port`` is then the bound one)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            status, content_type, body = self._answer(head.split(b"\r\n", 1)[0].decode("latin-1"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        writer.write(f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
                     f"connection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, request_line: str) -> tuple[str, str, bytes]:
        parts = request_line.split(" ")
        method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) == 3 else ("", "")
        if path not in ("/metrics", "/health"):
            return "404 Not Found", "text/plain", b"not found\n"
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", render_metrics(self._metrics())
        return "200 OK", "application/json", json.dumps(self._health()).encode()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


class PromptTokenSources:
    """Prompt tokens an engine took in, by where their KV came from (vLLM's ``prompt_tokens_by_source``):
    ``local_compute`` (prefilled here), ``local_cache_hit`` (this worker's prefix cache) and
    ``external_kv_transfer`` (pulled from a prefill worker); and how many requests received a KV transfer."""

    __slots__ = ("local_compute", "local_cache_hit", "external_kv_transfer", "kv_transfers")

    def __init__(self) -> None:
        self.local_compute = self.local_cache_hit = self.external_kv_transfer = self.kv_transfers = 0

    def rows(self, labels: tuple[tuple[str, str], ...]) -> list[MetricRow]:
        """``worker_prompt_tokens_total{source}`` and ``worker_kv_transfers_total``."""
        help_text = "Prompt tokens taken in, by where their KV came from."
        return [*(MetricRow("worker_prompt_tokens_total", help_text, "counter", (*labels, ("source", source)),
                            getattr(self, source))
                  for source in ("local_compute", "local_cache_hit", "external_kv_transfer")),
                MetricRow("worker_kv_transfers_total", "Requests whose prompt KV came from a prefill worker.",
                          "counter", labels, self.kv_transfers)]
