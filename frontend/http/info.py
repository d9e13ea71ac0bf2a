"""GET endpoints that describe the service: /v1/models, /health, /live."""

from __future__ import annotations

from ..gateway import Gateway
from ..protocol.openai import ModelEntry, ModelList
from .responses import send_json


def models(gateway: Gateway, proto) -> None:
    entries = [ModelEntry(m.name, m.created, gateway.settings.namespace, m.card.context_length, m.card.model_types)
               for m in gateway.models.models.values()]
    send_json(proto, 200, ModelList(entries))


def health(gateway: Gateway, proto) -> None:
    """200 with the live instances; 503 while no worker is registered."""
    instances = [
        {"instance_id": i.instance_id, "model": i.card.name, "endpoint": i.endpoint,
         "namespace": gateway.settings.namespace, "transport": "zmq", "load": _load(gateway, i.instance_id)}
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
    """The worker's active load as all HTTP processes together put it on it (shared memory)."""
    slot = gateway.router.slot(instance_id)
    if slot is None:
        return None
    requests, blocks, prefill_tokens = gateway.kv_index.load(slot)
    return {"active_requests": requests, "active_blocks": blocks, "active_prefill_tokens": prefill_tokens}
