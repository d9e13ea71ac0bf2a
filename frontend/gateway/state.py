"""Everything one HTTP worker process shares between requests: models, tokenizer pool, workers, router.

Built once per Granian worker process in ``__rsgi_init__`` from the daemon's config; Granian worker processes
share no Python state, so each has its own sockets and its own copy of the model table.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from dataclasses import dataclass
from typing import Collection

import msgspec
import zmq

from ..kv import KvIndexReader
from ..observability.metrics import (Metrics, Snapshot, SnapshotServer, SnapshotWriter, current_endpoint,
                                     gather_snapshots)
from ..observability.tracing import CURRENT_TRACE, start_tracing
from ..protocol import indexer as indexer_wire
from ..protocol.engine import GenerateRequest, UnaryRequest
from ..protocol.errors import InvalidRequest, ModelNotFound, ServiceUnavailable, WorkersBusy
from ..router.select import DECODE, PREFILL, WHOLE, Route, Router
from ..router.thresholds import ThresholdTable
from ..stores.media import MediaStore
from ..tokenizer.client import TokenizerClient
from ..transport.sockets import ROUTED_BLOCKS_HWM, open_socket
from ..transport.tcp_diag import open_tcp_diag
from ..transport.zmqloop import SocketDrainer
from .admission import Admission, DrainingFlag
from .discovery import ModelOverrides, ModelTable, ServedModel
from .engine_client import EngineClient
from .settings import GatewaySettings
from .submission import Submission


@dataclass(frozen=True)
class Reachable:
    """A served model's routing view without its unreachable instances (``Router.pick`` takes either)."""

    name: str
    instance_ids: list[str]
    block_size: int
    total_kv_blocks: dict[str, int]
    max_batched_tokens: dict[str, int]


class Gateway:
    """Per-process state and the operations handlers need."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: GatewaySettings) -> None:
        self.loop = loop
        self.settings = settings
        self.context = zmq.Context()
        self.metrics = Metrics()
        self.tracing = start_tracing(settings.otel_export_enabled)  # None while off
        self._metrics_writer = SnapshotWriter(loop, self.metrics, settings.metrics_dir)
        self._metrics_server = SnapshotServer(loop, self.context, self.metrics, settings.metrics_dir)
        self.engines = EngineClient(loop, settings.limits.max_queued_tokens)
        self.models = ModelTable(loop, self.context, settings.endpoints.registry_pub, self.engines.sync_instances,
                                 ModelOverrides(*settings.local_model, settings.kv_cache_block_size))
        self.tokenizer = TokenizerClient(loop, self.context, settings.endpoints.tokenizers, self.metrics,
                                         settings.tokenize_inline_max_bytes, settings.fast_bpe)
        self.kv_index = KvIndexReader(settings.endpoints.kv_index_name)
        self.media = MediaStore(settings.media)
        self.tcp_diag = open_tcp_diag()  # slow readers of streamed responses (http/client_backlog.py)
        self._send_routed = open_socket(self.context, zmq.PUSH, sndhwm=ROUTED_BLOCKS_HWM,
                                        connect=settings.endpoints.indexer_routed)
        self.busy_thresholds = ThresholdTable(settings.router.busy, settings.busy_thresholds_path)
        self.router = Router(settings.router, self.kv_index, self._routed, self.busy_thresholds)
        self.indexer_status = indexer_wire.IndexerStatus({}, [])
        status = open_socket(self.context, zmq.SUB, subscribe=b"", connect=settings.endpoints.indexer_status)
        self._status = SocketDrainer(loop, status, self._on_indexer_status)
        self._prefix = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
        self._counter = itertools.count()
        self.inflight = 0
        self.draining = DrainingFlag(settings.draining_flag)

    def admitted(self, endpoint: str) -> Admission:
        """Admission and accounting of one request (``with gateway.admitted(endpoint) as record``; see
        ``admission.Admission``): a 503 while the daemon drains or over ``--max-concurrent-requests``."""
        return Admission(self, endpoint)

    async def metrics_snapshots(self) -> list[Snapshot]:
        """The metrics of every serving process: live values of the running ones (asked over ipc), the last
        snapshot file of the others."""
        return await gather_snapshots(self.loop, self.context, self.settings.metrics_dir, self.metrics)

    def new_request_id(self) -> str:
        """Unique across gateway processes and daemon launches."""
        return f"{self._prefix}{next(self._counter):x}"

    def model(self, name: str) -> ServedModel:
        model = self.models.models.get(name)
        if model is None:
            raise ModelNotFound(name)
        return model

    def submit(self, model: ServedModel, request: GenerateRequest | UnaryRequest, *, prompt_tokens: int,
               block_hashes: bytes = b"", pinned: str | None = None, avoid: Collection[str] = (),
               leg: str = WHOLE) -> Submission:
        """Route and send a request (a generation's prompt, or a unary request's input tokens, counted as
        prefill); the caller owns the :class:`Submission` and must release it (``async with``). 503 when
        the model has no live instance (other than those in ``avoid``, instances that just failed the request).
        ``leg``: a whole request (``WHOLE``), or one leg of a disaggregated one: ``PREFILL`` goes to the model's
        prefill workers, ``DECODE`` to its other workers without prefill cost (``Router.pick``).
        With tracing on, the request's trace gets a ``route`` span and a generation carries its context to the
        worker."""
        trace = CURRENT_TRACE.get()
        started = time.perf_counter() if trace is not None else 0.0
        route = self._route(model, request, block_hashes, prompt_tokens, pinned, avoid, leg)
        if route.instance_id not in self.engines.connections:
            self.router.finish(route)
            raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
        if trace is not None:
            request = trace.routed(request, started, model.name, model.block_size, route)
        try:
            stream = self.engines.submit(route.instance_id, request)
        except OverflowError:  # MessagePack carries 64-bit integers: e.g. a JSON schema's bound of 2**64
            self.router.finish(route)
            raise InvalidRequest("a number in the request is outside the 64-bit integer range") from None
        return Submission(self.engines, self.router, route, stream)

    def _route(self, model: ServedModel, request: GenerateRequest | UnaryRequest, block_hashes: bytes,
               prompt_tokens: int, pinned: str | None, avoid: Collection[str], leg: str) -> Route:
        """The router's pick, in the metrics: a request refused because every worker is busy
        (``model_rejection_total``), the predicted hit rate of a KV routing decision (``kv_hit_rate``: the legs
        that prefill)."""
        candidates = self._reachable(model, avoid, prefill=leg == PREFILL)
        try:
            route = self.router.pick(candidates, block_hashes, prompt_tokens, pinned, leg=leg)
        except WorkersBusy:
            self.metrics.model_rejected(model.name, current_endpoint())
            raise
        if (self.settings.router.mode == "kv" and pinned is None and leg != DECODE
                and isinstance(request, GenerateRequest)):
            self.metrics.kv_routed(model.name, route.overlap_blocks, -(-prompt_tokens // model.block_size))
        return route

    def prefill_workers(self, model: ServedModel) -> list[str]:
        """The model's prefill workers the router can reach now (none: its requests are served whole)."""
        return self._reachable(model, prefill=True).instance_ids if model.prefill_ids else []

    def _reachable(self, model: ServedModel, avoid: Collection[str] = (), *,
                   prefill: bool = False) -> ServedModel | Reachable:
        """The model as the router should see it: its prefill workers or its others, without instances whose
        connection is lost (the registry still lists them until their lease expires) and those in ``avoid``."""
        unreachable = self.engines.unreachable
        if avoid:
            unreachable = unreachable | set(avoid)
        ids = model.prefill_ids if prefill else model.instance_ids
        if not prefill and (not unreachable or not unreachable.intersection(ids)):
            return model
        return Reachable(model.name, [i for i in ids if i not in unreachable], model.block_size,
                         model.total_kv_blocks, model.max_batched_tokens)

    def _routed(self, instance_id: str, block_hashes: bytes) -> None:
        try:
            self._send_routed.send(indexer_wire.encoder.encode(indexer_wire.RoutedBlocks(instance_id, block_hashes)),
                                   zmq.NOBLOCK)
        except zmq.Again:
            pass  # the indexer is behind: this decision is only a hint

    def _on_indexer_status(self, frames: list[bytes]) -> None:
        try:
            self.indexer_status = indexer_wire.status_decoder.decode(frames[-1])
        except msgspec.DecodeError:
            pass

    def close(self) -> None:
        self._metrics_writer.close()  # the final file first: a scrape uses it once the socket is gone
        self._metrics_server.close()
        self.models.close()
        self.tokenizer.close()
        self.engines.close()
        self._status.close()
        self._send_routed.close(0)
        self.kv_index.close()
        if self.tcp_diag is not None:
            self.tcp_diag.close()
        self.context.term()
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still queued
