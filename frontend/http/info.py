"""GET endpoints that describe the service: /v1/models, /v1/models/{model}, /health, /live, /metrics."""

from __future__ import annotations

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..observability.metrics import merge, render
from ..protocol.errors import MethodNotAllowed
from ..protocol.openai import ModelEntry, ModelList
from .reply import send_json

MODEL_PREFIX = "/v1/models/"
SHUTTING_DOWN = {"status": "shutting_down", "message": "Service is shutting down"}  # Dynamo's body


def models(gateway: Gateway, proto) -> None:
    send_json(proto, 200, ModelList([_entry(gateway, model) for model in gateway.models.models.values()]))


def retrieve_model(gateway: Gateway, scope, proto) -> None:
    """``GET /v1/models/{model}``: the model's entry of /v1/models (OpenAI's model object); 404 when no worker
    serves it. The name is the rest of the path, percent-decoded (by Granian), so it may contain ``/``."""
    if scope.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"method {scope.method} is not allowed on {MODEL_PREFIX}{{model}}")
    send_json(proto, 200, _entry(gateway, gateway.model(scope.path[len(MODEL_PREFIX):])))


def _entry(gateway: Gateway, model: ServedModel) -> ModelEntry:
    card = model.card
    return ModelEntry(model.name, model.created, gateway.settings.namespace, card.context_length, card.model_types)


def health(gateway: Gateway, proto) -> None:
    """200 with the live instances; 503 while no worker is registered, or once the daemon is shutting down."""
    instances = [
        {"instance_id": i.instance_id, "model": i.card.name, "endpoint": i.endpoint,
         "namespace": gateway.settings.namespace, "transport": "tcp", "load": _load(gateway, i.instance_id),
         "draining": i.draining, "disaggregation_mode": i.card.disaggregation_mode}
        for i in gateway.models.instances
    ]
    endpoints = sorted({f"{i['namespace']}.{i['model']}.generate" for i in instances})
    status = gateway.indexer_status
    if gateway.draining:
        send_json(proto, 503, {**SHUTTING_DOWN, "endpoints": endpoints, "instances": instances})
    elif instances:
        send_json(proto, 200, {"status": "healthy", "endpoints": endpoints, "instances": instances,
                               "router_mode": gateway.settings.router.mode,
                               "kv_index": {"live_blocks": status.live_blocks,
                                            "dropped_inserts": status.dropped_inserts,
                                            "workers": status.workers},
                               "warnings": status.problems, **_discovery(gateway)})
    else:
        send_json(proto, 503, {"status": "unhealthy", "message": "No endpoints available", "endpoints": [],
                               "instances": [], **_discovery(gateway)})


def _discovery(gateway: Gateway) -> dict:
    """``{"discovery": {"backend", "connected"}}`` with etcd (while not connected: the last table); else nothing."""
    state = gateway.models.discovery
    return {} if state is None else {"discovery": {"backend": state.backend, "connected": state.connected}}


def live(gateway: Gateway, proto) -> None:
    """200 while the process serves; 503 once the daemon is shutting down (draining its requests)."""
    if gateway.draining:
        send_json(proto, 503, SHUTTING_DOWN)
    else:
        send_json(proto, 200, {"status": "live", "message": "Service is live"})


def _load(gateway: Gateway, instance_id: str) -> dict[str, int] | None:
    """The worker's active load as all HTTP processes together put it on it, and as the worker reports it
    (zeros until it does; shared memory)."""
    slot = gateway.router.slot(instance_id)
    if slot is None:
        return None
    requests, blocks, prefill_tokens = gateway.kv_index.load(slot)
    running, waiting, kv_blocks = gateway.kv_index.reported_load(slot)
    return {"active_requests": requests, "active_blocks": blocks, "active_prefill_tokens": prefill_tokens,
            "engine_running_requests": running, "engine_waiting_requests": waiting,
            "engine_kv_blocks_used": kv_blocks}


async def metrics(gateway: Gateway, proto) -> None:
    """Prometheus text: every serving process's metrics (exact: live processes are asked for their values)
    plus live per-worker router gauges."""
    settings = gateway.settings
    total = merge(await gateway.metrics_snapshots())
    body = render(total, settings.metrics_prefix, _router_gauges(gateway))
    proto.response_bytes(200, [("content-type", "text/plain; version=0.0.4; charset=utf-8")], body)


def _router_gauges(gateway: Gateway) -> list[tuple[str, str, tuple, float]]:
    rows = []
    for model in gateway.models.models.values():
        rows += _model_gauges(gateway, model)
        for instance_id in model.instance_ids + model.prefill_ids:
            load = _load(gateway, instance_id)
            if load is None:
                continue
            labels = (("model", model.name), ("worker_id", instance_id))
            rows.append(("worker_active_requests", "Requests in flight on the worker (all frontend processes).",
                         labels, load["active_requests"]))
            rows.append(("worker_active_decode_blocks", "KV blocks of the worker's active requests.", labels,
                         load["active_blocks"]))
            rows.append(("worker_active_prefill_tokens", "Prompt tokens the worker has yet to prefill.", labels,
                         load["active_prefill_tokens"]))
    discovery = gateway.models.discovery
    connected = discovery is None or discovery.connected
    rows.append(("discovery_connected", "1 while worker discovery (the embedded registry, or etcd) is reachable; 0 "
                 "while this frontend serves its last instance table.", (), int(connected)))
    status = gateway.indexer_status
    rows.append(("kv_index_live_blocks", "Blocks in the shared KV index.", (), status.live_blocks))
    rows.append(("kv_index_dropped_inserts", "Blocks the full KV index could not take.", (), status.dropped_inserts))
    for instance_id, worker in status.workers.items():
        labels = (("worker_id", instance_id),)
        rows.append(("kv_events_applied", "KV events applied from the worker.", labels, worker.events))
        rows.append(("kv_event_gaps", "Sequence gaps in the worker's KV events.", labels, worker.gaps))
        rows.append(("kv_block_size_mismatch", "1 when the worker's KV events use another block size than its "
                     "model card.", labels, 1 if worker.block_size_mismatch is not None else 0))
    return rows


MODEL_CONFIG = (
    # Dynamo's model configuration gauges: name, help, the model card's runtime_config key
    ("model_total_kv_blocks", "Total KV cache blocks available for a worker serving the model.", "total_kv_blocks"),
    ("model_max_num_seqs", "Maximum number of sequences for a worker serving the model.", "max_num_seqs"),
    ("model_max_num_batched_tokens", "Maximum number of batched tokens for a worker serving the model.",
     "max_num_batched_tokens"),
)


def _model_gauges(gateway: Gateway, model: ServedModel) -> list[tuple[str, str, tuple, float]]:
    """Per model: its live workers, whether it can be routed to (a reachable instance), and its configuration
    (from the model card of its first worker, as Dynamo reads it; the migration limit is ``--migration-limit``)."""
    labels = (("model", model.name),)
    unreachable = gateway.engines.unreachable
    ready = any(instance_id not in unreachable for instance_id in model.instance_ids)
    card = model.card
    rows = [
        ("model_workers", "Live worker instances of the model that take whole requests or decode legs (agg, "
         "decode).", labels, len(model.instance_ids)),
        ("model_prefill_workers", "Live prefill workers of the model (disaggregated serving).", labels,
         len(model.prefill_ids)),
        ("model_ready", "Whether the frontend can route a request to the model (1 = ready, 0 = not ready).", labels,
         int(ready)),
        ("model_context_length", "Maximum context length in tokens for a worker serving the model.", labels,
         card.context_length),
        ("model_kv_cache_block_size", "KV cache block size in tokens for a worker serving the model.", labels,
         model.block_size),
        ("model_migration_limit", "Maximum number of request migrations allowed for the model.", labels,
         gateway.settings.router.migration_limit),
    ]
    for name, help_text, key in MODEL_CONFIG:
        value = card.runtime_config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            rows.append((name, help_text, labels, value))
    return rows
