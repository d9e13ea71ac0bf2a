"""A request sent to a worker: the one owner of its route and its output stream.

``Gateway.submit`` picks the worker (raising the router's load counters for it), sends the request and hands
back a :class:`Submission`. Whatever happens next, :meth:`Submission.release` (idempotent) undoes both: it
forgets the stream, aborts the worker's request unless it finished there, and takes the request's load off the
worker. It is an async context manager, so that a front door that leaves early (an exception, a client gone
before the first byte, a cancelled task) releases it by construction:

    async with gateway.submit(model, request, prompt_tokens=n) as submission:
        outputs = await submission.stream.next()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine_client import EngineClient, RequestStream

if TYPE_CHECKING:
    from ..router.select import Route, Router


class Submission:
    """One request in flight on a worker (see the module docstring)."""

    __slots__ = ("stream", "route", "_engines", "_router", "_released")

    def __init__(self, engines: EngineClient, router: "Router", route: "Route", stream: RequestStream) -> None:
        self.stream = stream
        self.route = route
        self._engines = engines
        self._router = router
        self._released = False

    def first_token(self) -> None:
        """The prompt is prefilled: its prefill load leaves the worker's counters."""
        self._router.first_token(self.route)

    def release(self, *, abort: bool = True) -> bool:
        """Forget the stream (aborting the worker's request when ``abort``: it did not finish there) and take
        the request's load off the worker; False when it was released already."""
        if self._released:
            return False
        self._released = True
        self._engines.release(self.stream, abort=abort)
        self._router.finish(self.route)
        return True

    async def __aenter__(self) -> "Submission":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
