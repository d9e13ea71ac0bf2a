"""Everything one HTTP worker process shares between requests: models, tokenizer pool, workers, router.

Built once per Granian worker process in ``__rsgi_init__`` from the daemon's config; Granian worker processes
share no Python state, so each has its own sockets and its own copy of the model table.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid

import msgspec
import zmq

from .daemon.topology import Endpoints
from .discovery import ModelTable, ServedModel
from .engine_client import EngineClient, RequestStream
from .errors import ModelNotFound, ServiceUnavailable
from .protocol.engine import GenerateRequest
from .router.select import Router
from .tokenizer.client import TokenizerClient


class GatewaySettings(msgspec.Struct, frozen=True):
    """The part of the daemon config an HTTP worker needs, plus the derived endpoints."""

    endpoints: Endpoints
    router_mode: str
    namespace: str
    body_limit_bytes: int
    max_concurrent_requests: int
    log_level: str


class Gateway:
    """Per-process state and the operations handlers need."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: GatewaySettings) -> None:
        self.loop = loop
        self.settings = settings
        self.context = zmq.Context()
        self.engines = EngineClient(loop, self.context)
        self.models = ModelTable(loop, self.context, settings.endpoints.registry_pub, self.engines.sync_instances)
        self.tokenizer = TokenizerClient(loop, self.context, settings.endpoints.tokenizers)
        self.router = Router(settings.router_mode)
        self._prefix = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
        self._counter = itertools.count()
        self.inflight = 0

    def new_request_id(self) -> str:
        """Unique across gateway processes and daemon launches."""
        return f"{self._prefix}{next(self._counter):x}"

    def model(self, name: str) -> ServedModel:
        model = self.models.models.get(name)
        if model is None:
            raise ModelNotFound(name)
        return model

    def submit(self, model: ServedModel, request: GenerateRequest) -> RequestStream:
        """Route and send a preprocessed request; 503 when the model has no live instance."""
        instance_id = self.router.pick(model.name, model.instance_ids)
        if instance_id not in self.engines.connections:
            raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
        return self.engines.submit(instance_id, request)

    def close(self) -> None:
        self.models.close()
        self.tokenizer.close()
        self.engines.close()
        self.context.term()
