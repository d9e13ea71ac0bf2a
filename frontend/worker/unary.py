"""Unary requests in the worker SDK: embeddings, images and videos, one result each.

The runtime hands every ``EmbedRequest`` / ``ImageRequest`` / ``VideoRequest`` to :class:`UnaryServer`,
which runs the engine's coroutine (``embed``, ``generate_images``, ``generate_video``) as a task and sends
its result, or a ``UnaryError``, back to the gateway that asked. An ``AbortRequest`` cancels the task.
Media engines report progress (and, for a streamed video, each frame) through a :class:`ProgressSink`,
which may be called from any thread (work done in ``asyncio.to_thread``, say).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from array import array
from typing import TYPE_CHECKING, Callable, Sequence

import msgspec

from ..protocol.engine import (EmbedRequest, EmbedResult, ImageRequest, MediaProgress, MediaResult, UnaryError,
                               UnaryRequest)
from ..protocol.errors import FrontendError

if TYPE_CHECKING:
    from .runtime import Engine

log = logging.getLogger(__name__)

# the Engine method each model type needs
TYPE_METHODS = {"chat": "add_request", "completions": "add_request", "embedding": "embed",
                "images": "generate_images", "videos": "generate_video"}


class NotServed(FrontendError):
    """The engine does not implement what the request needs ("this worker does not serve embeddings")."""


class InvalidInput(FrontendError):
    """The request is wrong for this engine (e.g. an unsupported size); the client gets a 400 with the message."""


Vector = bytes | Sequence[float]


def pack_vector(vector: Vector) -> bytes:
    """An embedding as little-endian float32 bytes (bytes are taken as already packed)."""
    if isinstance(vector, (bytes, bytearray, memoryview)):
        return bytes(vector)
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


class ProgressSink:
    """Where a media engine reports the progress of one request, from the event loop or any thread."""

    __slots__ = ("request_id", "wants_frames", "_send", "_loop", "_thread", "_percent")

    def __init__(self, request_id: str, wants_frames: bool, send: Callable[[MediaProgress], None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self.wants_frames = wants_frames  # the client streams the video: send every frame
        self._send = send
        self._loop = loop
        self._thread = threading.get_ident()
        self._percent = 0

    def report(self, fraction: float) -> None:
        """Done ``fraction`` (0..1) of the work; sent when the whole percent changes."""
        percent = max(0, min(100, int(fraction * 100)))
        if percent != self._percent:
            self._percent = percent
            self._post(MediaProgress(self.request_id, percent))

    def frame(self, jpeg: bytes) -> None:
        """A finished video frame as JPEG bytes (dropped unless ``wants_frames``)."""
        if self.wants_frames:
            self._post(MediaProgress(self.request_id, self._percent, jpeg))

    def _post(self, message: MediaProgress) -> None:
        if threading.get_ident() == self._thread:
            self._send(message)
        else:
            self._loop.call_soon_threadsafe(self._send, message)


class UnaryServer:
    """Runs unary requests as tasks and sends each one's reply to the gateway that sent it."""

    def __init__(self, engine: "Engine", loop: asyncio.AbstractEventLoop,
                 send: Callable[[object, msgspec.Struct], None]) -> None:
        self.engine = engine
        self._loop = loop
        self._send = send
        self.tasks: dict[str, asyncio.Task] = {}
        self._senders: dict[str, object] = {}  # request id -> the gateway connection that sent it

    def start(self, gateway: object, request: UnaryRequest) -> None:
        """Run ``request``; its reply goes to ``gateway`` (the connection it came on)."""
        request_id = request.request_id
        task = self._loop.create_task(self._serve(gateway, request))
        self.tasks[request_id] = task
        self._senders[request_id] = gateway
        log.debug("unary request started", extra={"request_id": request_id})
        task.add_done_callback(lambda _: self._forget(request_id))

    def _forget(self, request_id: str) -> None:
        self.tasks.pop(request_id, None)
        self._senders.pop(request_id, None)

    def abort(self, request_id: str) -> None:
        task = self.tasks.pop(request_id, None)
        self._senders.pop(request_id, None)
        if task is not None:
            task.cancel()
            log.debug("unary request aborted", extra={"request_id": request_id})

    def abort_from(self, gateway: object) -> None:
        """Abort every request ``gateway`` sent (its connection is gone)."""
        for request_id in [rid for rid, sender in self._senders.items() if sender is gateway]:
            self.abort(request_id)

    def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()

    async def _serve(self, identity: object, request: UnaryRequest) -> None:
        request_id = request.request_id
        try:
            reply: msgspec.Struct = await self._run(identity, request)
        except InvalidInput as exc:
            reply = UnaryError(request_id, str(exc), invalid=True)
        except NotServed as exc:
            reply = UnaryError(request_id, str(exc))
        except Exception as exc:  # an engine bug fails this request only
            log.exception("engine failed a unary request", extra={"request_id": request_id})
            reply = UnaryError(request_id, f"engine error: {exc}")
        self._send(identity, reply)

    async def _run(self, identity: object, request: UnaryRequest) -> msgspec.Struct:
        if isinstance(request, EmbedRequest):
            vectors = await self.engine.embed(request)
            if len(vectors) != len(request.inputs):
                raise RuntimeError(f"the engine returned {len(vectors)} vectors for {len(request.inputs)} inputs")
            return EmbedResult(request.request_id, [pack_vector(vector) for vector in vectors])
        wants_frames = not isinstance(request, ImageRequest) and request.stream_frames
        progress = ProgressSink(request.request_id, wants_frames, lambda message: self._send(identity, message),
                                self._loop)
        if isinstance(request, ImageRequest):
            items = await self.engine.generate_images(request, progress)
        else:
            items = await self.engine.generate_video(request, progress)
        return MediaResult(request.request_id, list(items))
