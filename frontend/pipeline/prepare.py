"""What every front door checks before a request reaches a worker: the served model and the pinned worker.

``served_model`` is the one place that answers "unknown model" (404), "this model does not serve that API"
(400) and "no live worker serves it" (503, checked before any tokenization). ``pinned_instance`` is the one
reading of the worker-pinning request headers (``x-worker-instance-id``, Dynamo's
``x-dynamo-worker-instance-id``) and ``nvext.backend_instance_id``; with ``--disable-nvext`` neither pins.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..protocol.errors import InvalidRequest, ServiceUnavailable

PIN_HEADERS = ("x-worker-instance-id", "x-dynamo-worker-instance-id")
API_NAMES = {"chat": "chat completions", "completions": "completions", "embedding": "embeddings",
             "images": "image generation", "videos": "video generation"}  # model type -> what users call it


def served_model(gateway: Gateway, name: str, model_type: str) -> ServedModel:
    """The model ``name`` if it serves ``model_type`` and has a live worker (404, 400, 503 otherwise)."""
    model = gateway.model(name)
    if model_type not in model.card.model_types:
        served = ", ".join(model.card.model_types)
        raise InvalidRequest(f"model `{model.name}` does not serve {API_NAMES.get(model_type, model_type)} "
                             f"(it serves: {served})", param="model")
    require_live(model)
    return model


def require_live(model: ServedModel) -> None:
    """503 when no live worker serves ``model`` (before tokenizing: a refused request costs nothing)."""
    if not model.instance_ids:
        raise ServiceUnavailable(f"no live worker serves model `{model.name}`")


def default_model(gateway: Gateway, name: str | None, model_type: str) -> str:
    """``name``, or the only served model of ``model_type`` when the request names none (else a 400)."""
    if name:
        return name
    candidates = [m.name for m in gateway.models.models.values() if model_type in m.card.model_types]
    if len(candidates) != 1:
        raise InvalidRequest(f"model is required ({len(candidates)} models serve {model_type})", param="model")
    return candidates[0]


def pinned_instance(gateway: Gateway, headers: Mapping[str, str], backend_instance_id: Any = None) -> str | None:
    """The worker instance the client asked for: a pinning header first, then ``nvext.backend_instance_id``;
    None when it asked for none or ``--disable-nvext`` is on."""
    if not gateway.settings.apis.nvext:
        return None
    return pin_of(headers, backend_instance_id)


def pin_of(headers: Mapping[str, str], backend_instance_id: Any = None) -> str | None:
    """A pinning header's value, else ``backend_instance_id`` as a string (nvext already enabled)."""
    for header in PIN_HEADERS:
        value = headers.get(header)
        if value:
            return value
    return None if backend_instance_id is None else str(backend_instance_id)
