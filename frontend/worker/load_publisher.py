"""Publishing a worker's own load (``protocol.load``) for the frontends' routers.

Sockets:
    send_load  PUB  bind  tcp://HOST:random   LoadReport, on change (at most every ``MIN_INTERVAL_S``, the
                                              latest wins) and at least every ``REPUBLISH_S``
"""

from __future__ import annotations

import asyncio
import time

import zmq

from ..protocol import load as wire
from ..protocol.load import LoadReport
from ..transport.sockets import bind_random_port, open_socket

REPUBLISH_S = 1.0
# an engine stepping every millisecond sends 10 reports a second, not 1,000: the indexer wakes up for each report
# (~100 µs of CPU per wake-up measured on this 2-core VM), so at 50 a second 2 workers cost it ~8 % of the
# frontend's CPU per streamed token at engine pace, and 256 workers would take more than a core
MIN_INTERVAL_S = 0.1


class LoadPublisher:
    """Sends a :class:`LoadReport` when the load changes, and the last one again every second."""

    def __init__(self, context: zmq.Context, *, host: str = "127.0.0.1") -> None:
        self._pub = open_socket(context, zmq.PUB)
        self.endpoint = bind_random_port(self._pub, host)
        self._last = LoadReport(0, 0, 0)
        self._sent_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deferred: asyncio.TimerHandle | None = None

    def runtime_config_entries(self) -> dict[str, str]:
        """What the model card's runtime_config advertises so the indexer can subscribe."""
        return {"load_endpoint": self.endpoint}

    def report(self, running: int, waiting: int, kv_blocks_used: int) -> None:
        """The engine's load now; published if it differs from the last report."""
        report = LoadReport(running, waiting, kv_blocks_used)
        if report == self._last:
            return
        self._last = report
        if self._deferred is not None:
            return  # a send is due soon and takes the latest report
        wait = self._sent_at + MIN_INTERVAL_S - time.monotonic()
        if wait <= 0 or self._loop is None:
            self._send()
        else:
            self._deferred = self._loop.call_later(wait, self._send)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Republish the last report every second from ``loop`` (for subscribers that joined late), and defer
        reports that come too close together."""
        self._loop = loop

        def tick() -> None:
            if time.monotonic() - self._sent_at >= REPUBLISH_S / 2:
                self._send()
            self._timer = loop.call_later(REPUBLISH_S, tick)
        self._timer = loop.call_later(REPUBLISH_S, tick)

    def _send(self) -> None:
        self._deferred = None
        self._sent_at = time.monotonic()
        try:
            self._pub.send(wire.encoder.encode(self._last), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no subscriber keeps up: the next report replaces this one

    def close(self) -> None:
        for timer in (self._timer, self._deferred):
            if timer is not None:
                timer.cancel()
        self._pub.close(0)
