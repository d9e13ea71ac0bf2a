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
         "namespace": gateway.settings.namespace, "transport": "zmq"}
        for i in gateway.models.instances
    ]
    endpoints = sorted({f"{i['namespace']}.{i['model']}.generate" for i in instances})
    if instances:
        send_json(proto, 200, {"status": "healthy", "endpoints": endpoints, "instances": instances})
    else:
        send_json(proto, 503, {"status": "unhealthy", "message": "No endpoints available", "endpoints": [],
                               "instances": []})


def live(gateway: Gateway, proto) -> None:
    send_json(proto, 200, {"status": "live", "message": "Service is live"})
