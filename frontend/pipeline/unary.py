"""Running one unary request (embeddings, images, videos) on a worker, from a gateway process.

A :class:`UnaryCall` submits the request like a generation (the router's load accounting included, with the
input tokens as prefill; one :class:`~frontend.gateway.submission.Submission` owns route and stream) and reads
the worker's replies: any number of ``MediaProgress`` messages, then one ``EmbedResult`` / ``MediaResult``, or
a ``UnaryError`` (400 when the request was at fault, else 502; ``WorkerGone`` when the worker went away). It
is an async context manager: leaving the block releases the worker side, aborting a request still running
there (the client left, the reader stopped, an exception).
"""

from __future__ import annotations

from typing import AsyncIterator

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..observability.metrics import CURRENT_REQUEST
from ..protocol.engine import EmbedResult, MediaProgress, MediaResult, UnaryError, UnaryReply, UnaryRequest
from ..protocol.errors import EngineError, InvalidRequest
from .disconnect import DisconnectSource, DisconnectWatch


class UnaryCall:
    """One unary request on a worker; read it with ``replies()`` or ``result()`` inside ``async with``."""

    __slots__ = ("gateway", "client_gone", "submission", "_labels", "_watcher", "_finished", "_released")

    def __init__(self, gateway: Gateway, model: ServedModel, request: UnaryRequest, *, input_tokens: int = 0,
                 pinned: str | None = None, disconnected: DisconnectSource | None = None) -> None:
        self.gateway = gateway
        self.client_gone = False
        self._labels = (("model", model.name),)
        record = CURRENT_REQUEST.get()
        if record is not None:
            record.accepted(gateway.metrics, model.name)
        self.submission = gateway.submit(model, request, prompt_tokens=input_tokens, pinned=pinned)
        gateway.metrics.add_gauge("inflight_requests", self._labels, 1)
        self._finished = self._released = False
        self._watcher = (DisconnectWatch(gateway.loop, disconnected, self._on_disconnect) if disconnected is not None
                         else None)

    async def __aenter__(self) -> "UnaryCall":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def _on_disconnect(self) -> None:
        if not self.client_gone:
            self.client_gone = True
            self.submission.stream.wake()

    async def replies(self) -> AsyncIterator[MediaProgress | EmbedResult | MediaResult]:
        """Progress messages, then the result; ends early (nothing more) when the client left."""
        stream = self.submission.stream
        while not self._finished:
            items = await stream.next()
            if self.client_gone:
                return
            for item in items:
                self._finished = not isinstance(item, MediaProgress)
                yield _checked(item)

    async def result(self) -> EmbedResult | MediaResult | None:
        """The final reply (progress is skipped); None when the client left first."""
        async for item in self.replies():
            if not isinstance(item, MediaProgress):
                return item
        return None

    def release(self) -> None:
        """Release the worker side once (aborting the request unless its result came)."""
        if self._released:
            return
        self._released = True
        if self._watcher is not None:
            self._watcher.stop()
        self.submission.release(abort=not self._finished)
        self.gateway.metrics.add_gauge("inflight_requests", self._labels, -1)


def _checked(item: MediaProgress | UnaryReply) -> MediaProgress | EmbedResult | MediaResult:
    """A reply as it is, or its error raised: 400 for the request's fault, 502 for the worker's."""
    if isinstance(item, UnaryError):
        if item.invalid:
            raise InvalidRequest(item.message)
        raise EngineError(item.message)
    return item
