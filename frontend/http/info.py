"""GET endpoints that describe the service: /v1/models, /health, /live."""

from __future__ import annotations

from ..gateway.state import Gateway
from ..observability.metrics import merge, render
from ..protocol.openai import ModelEntry, ModelList
from .reply import send_json


def models(gateway: Gateway, proto) -> None:
    entries = [ModelEntry(m.name, m.created, gateway.settings.namespace, m.card.context_length, m.card.model_types)
               for m in gateway.models.models.values()]
    send_json(proto, 200, ModelList(entries))


def health(gateway: Gateway, proto) -> None:
    """200 with the live instances; 503 while no worker is registered."""
    instances = [
        {"instance_id": i.instance_id, "model": i.card.name, "endpoint": i.endpoint,
         "namespace": gateway.settings.namespace, "transport": "zmq", "load": _load(gateway, i.instance_id),
         "draining": i.draining}
        for i in gateway.models.instances
    ]
    endpoints = sorted({f"{i['namespace']}.{i['model']}.generate" for i in instances})
    status = gateway.indexer_status
    if instances:
        send_json(proto, 200, {"status": "healthy", "endpoints": endpoints, "instances": instances,
                               "router_mode": gateway.settings.router.mode,
                               "kv_index": {"live_blocks": status.live_blocks,
                                            "dropped_inserts": status.dropped_inserts,
                                            "workers": status.workers},
                               "warnings": status.problems})
    else:
        send_json(proto, 503, {"status": "unhealthy", "message": "No endpoints available", "endpoints": [],
                               "instances": []})


def live(gateway: Gateway, proto) -> None:
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
        rows.append(("model_workers", "Live worker instances of the model.", (("model", model.name),),
                     len(model.instance_ids)))
        for instance_id in model.instance_ids:
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
