"""Publishing a worker's own load (``protocol.load``) for the frontends' routers.

Sockets:
    send_load  PUB  bind  tcp://HOST:random   LoadReport, on change and at least every ``REPUBLISH_S``
"""

from __future__ import annotations

import asyncio
import time

import zmq

from ..protocol import load as wire
from ..protocol.load import LoadReport

REPUBLISH_S = 1.0


class LoadPublisher:
    """Sends a :class:`LoadReport` when the load changes, and the last one again every second."""

    def __init__(self, context: zmq.Context, *, host: str = "127.0.0.1") -> None:
        self._pub = context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://{host}:{self._pub.bind_to_random_port(f'tcp://{host}')}"
        self._last = LoadReport(0, 0, 0)
        self._sent_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def runtime_config_entries(self) -> dict[str, str]:
        """What the model card's runtime_config advertises so the indexer can subscribe."""
        return {"load_endpoint": self.endpoint}

    def report(self, running: int, waiting: int, kv_blocks_used: int) -> None:
        """The engine's load now; published if it differs from the last report."""
        report = LoadReport(running, waiting, kv_blocks_used)
        if report != self._last:
            self._last = report
            self._send()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Republish the last report every second from ``loop`` (for subscribers that joined late)."""
        def tick() -> None:
            if time.monotonic() - self._sent_at >= REPUBLISH_S / 2:
                self._send()
            self._timer = loop.call_later(REPUBLISH_S, tick)
        self._timer = loop.call_later(REPUBLISH_S, tick)

    def _send(self) -> None:
        self._sent_at = time.monotonic()
        try:
            self._pub.send(wire.encoder.encode(self._last), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no subscriber keeps up: the next report replaces this one

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._pub.close(0)
