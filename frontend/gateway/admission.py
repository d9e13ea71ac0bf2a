"""Admission and accounting of one request, for every front door (HTTP, gRPC): ``with gateway.admitted(...)``.

A class rather than a ``@contextmanager`` generator, and the daemon's draining flag (a file the supervisor creates
on SIGTERM) looked at no more than every ``DRAINING_CHECK_S``: both are on every request's path.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ..observability.metrics import CURRENT_REQUEST, RequestRecord, error_type_for
from ..protocol.errors import RequestError, ServiceUnavailable

if TYPE_CHECKING:
    from .state import Gateway

DRAINING_CHECK_S = 0.05
"""How stale the draining check may be: requests arriving this long after the flag appears may still be admitted
(they are served; the graceful shutdown waits for them)."""


class DrainingFlag:
    """Whether the daemon is draining (the flag file exists), looked up at most every ``DRAINING_CHECK_S``."""

    __slots__ = ("path", "_draining", "_checked_at")

    def __init__(self, path: str) -> None:
        self.path = path
        self._draining = False
        self._checked_at = -DRAINING_CHECK_S

    def __bool__(self) -> bool:
        if self._draining:
            return True  # a drain is never undone
        now = time.monotonic()
        if now - self._checked_at >= DRAINING_CHECK_S:
            self._checked_at = now
            self._draining = os.path.exists(self.path)
        return self._draining


class Admission:
    """Refused with 503 while the daemon drains or over ``--max-concurrent-requests`` (per process); counted in
    ``gateway.inflight`` (also while its body uploads) and recorded in ``requests_total`` with its endpoint label
    and error type."""

    __slots__ = ("gateway", "record")

    def __init__(self, gateway: "Gateway", endpoint: str) -> None:
        limit = gateway.settings.max_concurrent_requests
        if gateway.draining:
            raise ServiceUnavailable("the server is shutting down; retry on another instance")
        if limit and gateway.inflight >= limit:
            raise ServiceUnavailable("too many concurrent requests; retry later")
        self.gateway = gateway
        self.record = RequestRecord(endpoint)

    def __enter__(self) -> RequestRecord:
        self.gateway.inflight += 1
        CURRENT_REQUEST.set(self.record)
        return self.record

    def __exit__(self, exc_type, exc, traceback) -> None:
        record = self.record
        if isinstance(exc, RequestError):
            record.error_type = error_type_for(exc.status)
        elif isinstance(exc, Exception):  # a bug (not a cancellation)
            record.error_type = "internal"
        self.gateway.inflight -= 1
        record.record(self.gateway.metrics)
