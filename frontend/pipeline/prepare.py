"""What every front door checks before a request reaches a worker: the served model and the pinned worker.

``served_model`` is the one place that answers "unknown model" (404), "this model does not serve that API"
(400) and "no live worker serves it" (503, checked before any tokenization). ``pinned_instance`` is the one
reading of the worker-pinning request headers (``x-worker-instance-id``, Dynamo's
``x-dynamo-worker-instance-id``) and ``nvext.backend_instance_id``; with ``--disable-nvext`` neither pins.
``check_limits`` is the one check of what a request may hold (``--max-stop-strings`` and the rest of the
``limits`` options; README "Limits").
"""

from __future__ import annotations

from typing import Any, Mapping

import msgspec

from ..config.sections import LimitsConfig
from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..observability.metrics import CURRENT_REQUEST
from ..protocol.errors import InvalidRequest, ServiceUnavailable
from ..protocol.openai import ChatCompletionRequest, CompletionRequest

PIN_HEADERS = ("x-worker-instance-id", "x-dynamo-worker-instance-id")
PREFILL_PIN_HEADERS = ("x-prefill-instance-id", "x-dynamo-prefill-instance-id")  # a disaggregated request's prefill
API_NAMES = {"chat": "chat completions", "completions": "completions", "embedding": "embeddings",
             "images": "image generation", "videos": "video generation"}  # model type -> what users call it


def served_model(gateway: Gateway, name: str, model_type: str) -> ServedModel:
    """The model ``name`` if it serves ``model_type`` and has a live worker (404, 400, 503 otherwise). The request
    being served is then accepted for that model (``requests_started_total``, the model label of its metrics)."""
    model = gateway.model(name)
    record = CURRENT_REQUEST.get()
    if record is not None:
        record.accepted(gateway.metrics, model.name)
    if model_type not in model.card.model_types:
        served = ", ".join(model.card.model_types)
        raise InvalidRequest(f"model `{model.name}` does not serve {API_NAMES.get(model_type, model_type)} "
                             f"(it serves: {served})", param="model")
    require_live(model)
    return model


def check_limits(request: ChatCompletionRequest | CompletionRequest, limits: LimitsConfig, body_size: int,
                 names: Mapping[str, str] | None = None) -> None:
    """A 400 naming the field when ``request`` holds more than ``limits`` allow: stop strings (how many, how long)
    and, for chat, messages and tools (how many, each one's parameters schema in bytes of JSON). ``names``: the
    door's own names of the fields (Anthropic's ``stop_sequences``); ``body_size``: the request's JSON size (no
    schema is measured when the whole body is within the schema limit)."""
    names = names or {}
    stop = request.stop
    if stop:
        stops = [stop] if isinstance(stop, str) else stop
        name = names.get("stop", "stop")
        if len(stops) > limits.max_stop_strings:
            raise InvalidRequest(f"{name} has {len(stops)} stop strings; at most {limits.max_stop_strings} are "
                                 "allowed", param=name)
        if max(map(len, stops)) > limits.max_stop_string_length:
            index, longest = max(enumerate(stops), key=lambda item: len(item[1]))
            where = name if isinstance(stop, str) else f"{name}[{index}]"
            raise InvalidRequest(f"{where} is {len(longest)} characters long; a stop string may have at most "
                                 f"{limits.max_stop_string_length}", param=where)
    if not isinstance(request, ChatCompletionRequest):
        return
    if len(request.messages) > limits.max_messages:
        name = names.get("messages", "messages")
        raise InvalidRequest(f"{name} has {len(request.messages)} messages; at most {limits.max_messages} are "
                             "allowed", param=name)
    tools = request.tools or ()
    name = names.get("tools", "tools")
    if len(tools) > limits.max_tools:
        raise InvalidRequest(f"{name} has {len(tools)} tools; at most {limits.max_tools} are allowed", param=name)
    if body_size > limits.max_tool_schema_bytes:
        for index, tool in enumerate(tools):
            size = len(msgspec.json.encode(tool.function.parameters)) if tool.function.parameters else 0
            if size > limits.max_tool_schema_bytes:
                raise InvalidRequest(f"{name}[{index}]'s parameters schema is {size} bytes of JSON; at most "
                                     f"{limits.max_tool_schema_bytes} are allowed", param=f"{name}[{index}]")


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


def pin_of(headers: Mapping[str, str], backend_instance_id: Any = None,
           names: tuple[str, ...] = PIN_HEADERS) -> str | None:
    """A pinning header's value (of ``names``), else ``backend_instance_id`` as a string (nvext already enabled)."""
    for header in names:
        value = headers.get(header)
        if value:
            return value
    return None if backend_instance_id is None else str(backend_instance_id)
