"""Backpressure for a client that reads a streamed response slowly.

Granian buffers whatever a stream writes until the client takes it, without limit. So a stream counts the
bytes it wrote, and every ``check_every`` bytes asks the kernel how many the client's TCP stack acknowledged
(``transport/tcp_diag.py``). The difference is what this machine holds for the client: Granian's buffer plus
the socket's send buffer. Above ``max_stream_backlog_mb`` the stream stops pulling outputs, and polls until the
backlog is under half the limit. Meanwhile the request's queue fills up to ``max_queued_tokens`` and the worker
is paused (``gateway/engine_client.py``), so that a stalled stream holds a bounded amount. A backlog still above
the limit after ``slow_reader_timeout_s`` aborts the request with :class:`~frontend.protocol.errors.SlowReader`
(its error event is the last thing written; the worker stops generating).

The kernel is first asked at the first check, ``check_every`` bytes into the stream (a quarter of the limit at
most): its answer is the baseline, and the bytes written before it are not counted, so the bound holds to within
that quarter. A stream that never gets that far (nearly every LLM answer: 128 tokens are ~30 KB) never asks;
asking at the start cost every stream a netlink round trip and address parsing, ~40 µs of a cold request. On
HTTP/2 the count is the whole connection's. Where the kernel cannot be asked (not Linux, a unix socket, a
connection it does not know at the first check), nothing is bounded.
"""

from __future__ import annotations

import asyncio
import time

from ..config.sections import LimitsConfig
from ..observability.metrics import Metrics
from ..protocol.errors import SlowReader
from ..transport.tcp_diag import TcpConnection, TcpDiag

CHECK_EVERY_MAX = 256 << 10  # bytes written between two questions to the kernel, at most
FIRST_POLL_S = 0.01  # a stalled stream asks again after this long, doubling up to MAX_POLL_S
MAX_POLL_S = 0.25


class ClientBacklog:
    """The unacknowledged bytes of one streamed response, and the wait for a slow client."""

    __slots__ = ("_diag", "_server", "_client", "_connection", "_baseline", "limit", "timeout_s", "check_every",
                 "_metrics")

    def __init__(self, diag: TcpDiag, server: str, client: str, limits: LimitsConfig, metrics: Metrics) -> None:
        self._diag = diag
        self._server, self._client = server, client
        self._connection: TcpConnection | None = None  # known at the first check
        self._baseline: tuple[int, int] | None = None  # (bytes written, bytes acknowledged) at the first check
        self.limit = int(limits.max_stream_backlog_mb * (1 << 20))
        self.timeout_s = limits.slow_reader_timeout_s
        self.check_every = max(1, min(CHECK_EVERY_MAX, self.limit // 4))
        self._metrics = metrics

    @classmethod
    def watch(cls, diag: TcpDiag | None, server: str, client: str, limits: LimitsConfig,
              metrics: Metrics) -> "ClientBacklog | None":
        """The backlog of a stream about to start on the connection between ``server`` and ``client`` (Granian's
        ``scope.server`` and ``scope.client``); None when nothing is bounded (no limit, or no kernel to ask). The
        kernel is asked from the first check on (see the module docstring)."""
        if diag is None or limits.max_stream_backlog_mb <= 0:
            return None
        return cls(diag, server, client, limits, metrics)

    def unacknowledged(self, written: int) -> int | None:
        """Bytes written since the first check that the client has not acknowledged (0 at the first check, and
        always where the kernel does not know the connection); None once the connection is gone."""
        if self._baseline is None:
            return self._first_check(written)
        if self._connection is None:
            return 0  # not bounded
        acked = self._diag.bytes_acked(self._connection)
        if acked is None:
            return None
        written_then, acked_then = self._baseline
        return (written - written_then) - (acked - acked_then)

    def _first_check(self, written: int) -> int:
        connection = self._diag.connection(self._server, self._client)
        acked = self._diag.bytes_acked(connection) if connection is not None else None
        self._connection = connection if acked is not None else None
        self._baseline = (written, acked or 0)
        return 0

    async def wait_for_reader(self, written: int) -> bool:
        """Return once the client holds no more than the limit (at once, nearly always), or, after a stall, half
        of it; False when the connection is gone. Raises ``SlowReader`` when a stall outlasts the timeout."""
        backlog = self.unacknowledged(written)
        if backlog is None:
            return False
        if backlog <= self.limit:
            return True
        deadline = time.monotonic() + self.timeout_s
        delay = FIRST_POLL_S
        while True:
            await asyncio.sleep(delay)
            backlog = self.unacknowledged(written)
            if backlog is None:
                self._count("client_gone")
                return False
            if backlog <= self.limit // 2:
                self._count("caught_up")
                return True
            if time.monotonic() >= deadline:
                self._count("aborted")
                raise SlowReader(backlog, self.timeout_s)
            delay = min(delay * 2, MAX_POLL_S)

    def _count(self, outcome: str) -> None:
        self._metrics.inc("http_stream_stalls_total", (("outcome", outcome),))
