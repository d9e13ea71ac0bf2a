"""Running one unary request (embeddings, images, videos) on a worker, from a gateway process.

A :class:`UnaryCall` routes the request like a generation (the router's load accounting included, with the
input tokens as prefill), sends it on the request plane and reads the worker's replies: any number of
``MediaProgress`` messages, then one ``EmbedResult`` / ``MediaResult``, or a ``UnaryError`` (400 when the
request was at fault, else 502). The worker side is always released; a request still running when the
client leaves or the reader stops is aborted on the worker.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncIterator, Awaitable

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..observability.metrics import CURRENT_REQUEST
from ..protocol.engine import (EmbedResult, MediaProgress, MediaResult, RequestOutput, UnaryError, UnaryReply,
                               UnaryRequest)
from ..protocol.errors import EngineError, InvalidRequest, ServiceUnavailable
from .disconnect import DisconnectWatch

CLIENT_GONE = "client_disconnected"


def typed_model(gateway: Gateway, name: str, model_type: str, what: str) -> ServedModel:
    """The served model ``name`` if it serves ``model_type`` (400 if not, 404 unknown, 503 no live worker)."""
    model = gateway.model(name)
    if model_type not in model.card.model_types:
        served = ", ".join(model.card.model_types)
        raise InvalidRequest(f"model `{model.name}` does not serve {what} (it serves: {served})", param="model")
    if not model.instance_ids:
        raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
    return model


def default_model(gateway: Gateway, name: str | None, model_type: str) -> str:
    """``name``, or the only served model of ``model_type`` when the request names none (else a 400)."""
    if name:
        return name
    candidates = [m.name for m in gateway.models.models.values() if model_type in m.card.model_types]
    if len(candidates) != 1:
        raise InvalidRequest(f"model is required ({len(candidates)} models serve {model_type})", param="model")
    return candidates[0]


class UnaryCall:
    """One unary request on a worker; read it with ``replies()`` or ``result()``."""

    def __init__(self, gateway: Gateway, model: ServedModel, request: UnaryRequest, *, input_tokens: int = 0,
                 pinned: str | None = None, disconnected: Awaitable[None] | None = None) -> None:
        self.gateway = gateway
        self.client_gone = False
        self._labels = (("model", model.name),)
        record = CURRENT_REQUEST.get()
        if record is not None:
            record.model = model.name
        self.route = gateway.router.pick(model, b"", input_tokens, pinned)
        if self.route.instance_id not in gateway.engines.connections:
            gateway.router.finish(self.route)
            raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
        self.stream = gateway.engines.submit(self.route.instance_id, request)
        gateway.metrics.add_gauge("inflight_requests", self._labels, 1)
        self._watcher = DisconnectWatch(disconnected, self._on_disconnect) if disconnected is not None else None

    def _on_disconnect(self) -> None:
        if not self.client_gone:
            self.client_gone = True
            self.stream.push(RequestOutput(self.stream.request_id, [], CLIENT_GONE))

    async def replies(self) -> AsyncIterator[MediaProgress | EmbedResult | MediaResult]:
        """Progress messages, then the result; ends early (nothing more) when the client left. Read it inside
        ``contextlib.aclosing`` so that the worker side is released as soon as the reader stops."""
        finished = False
        try:
            while not finished:
                for item in await self.stream.next():
                    if self.client_gone:
                        return
                    finished = not isinstance(item, MediaProgress)
                    yield _checked(item)
        finally:
            if self._watcher is not None:
                self._watcher.stop()
            self.gateway.engines.release(self.stream, abort=not finished)
            self.gateway.router.finish(self.route)
            self.gateway.metrics.add_gauge("inflight_requests", self._labels, -1)

    async def result(self) -> EmbedResult | MediaResult | None:
        """The final reply (progress is skipped); None when the client left first."""
        async with aclosing(self.replies()) as replies:
            async for item in replies:
                if not isinstance(item, MediaProgress):
                    return item
        return None


def _checked(item: MediaProgress | UnaryReply | RequestOutput) -> MediaProgress | EmbedResult | MediaResult:
    """A reply as it is, or its error raised: 400 for the request's fault, 502 for the worker's."""
    if isinstance(item, UnaryError):
        if item.invalid:
            raise InvalidRequest(item.message)
        raise EngineError(item.message)
    if isinstance(item, RequestOutput):  # the worker went away (EngineClient._drop)
        raise EngineError(item.error or "the worker failed the request")
    return item
