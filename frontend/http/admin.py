"""The admin API: ``GET /busy_threshold`` lists every model's busy thresholds, ``POST /busy_threshold`` changes
one model's at run time in every HTTP process (``router/thresholds.py``), as Dynamo's frontend admin endpoint
does. Off with ``--disable-frontend-admin-api`` (DYN_DISABLE_FRONTEND_ADMIN_API): then it is a 404.

POST body: ``{"model": NAME, "active_decode_blocks_threshold": F, "active_prefill_tokens_threshold": N,
"active_prefill_tokens_threshold_frac": F}``; a field left out keeps its value, ``null`` or 0 turns that check
off. The answer is the model's thresholds after the change (a body with only ``model`` reads them).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..gateway.state import Gateway
from ..protocol.errors import ModelNotFound, NotFoundRoute
from ..router.thresholds import BusyThresholds
from .reply import send_json
from .streaming import decode_request


Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class BusyThresholdUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """POST /busy_threshold's body."""

    model: Annotated[str, msgspec.Meta(max_length=1024)]
    active_decode_blocks_threshold: Fraction | None | msgspec.UnsetType = msgspec.UNSET
    active_prefill_tokens_threshold: TokenCount | None | msgspec.UnsetType = msgspec.UNSET
    active_prefill_tokens_threshold_frac: Fraction | None | msgspec.UnsetType = msgspec.UNSET


class ModelThresholds(BusyThresholds, frozen=True, kw_only=True):
    """One model's thresholds as the admin API answers them."""

    model: str


class ThresholdList(msgspec.Struct):
    """GET /busy_threshold's answer."""

    thresholds: list[ModelThresholds]


_decoder = msgspec.json.Decoder(BusyThresholdUpdate)


def _check_enabled(gateway: Gateway) -> None:
    if not gateway.settings.admin_api:
        raise NotFoundRoute("the admin API is disabled on this server (DYN_DISABLE_FRONTEND_ADMIN_API)")


def _answer(model: str, thresholds: BusyThresholds) -> ModelThresholds:
    return ModelThresholds(model=model, **msgspec.structs.asdict(thresholds))


def list_thresholds(gateway: Gateway, proto) -> None:
    """Every served model's thresholds (and those of models changed at run time that are not served now)."""
    _check_enabled(gateway)
    table = gateway.busy_thresholds
    names = sorted(set(gateway.models.models) | set(table.overrides()))
    send_json(proto, 200, ThresholdList([_answer(name, table.of(name)) for name in names]))


async def update_thresholds(gateway: Gateway, scope, proto, body: bytes) -> None:
    """Change one served model's thresholds; answer them."""
    _check_enabled(gateway)
    update: BusyThresholdUpdate = decode_request(_decoder, body)
    if update.model not in gateway.models.models:
        raise ModelNotFound(update.model)
    table = gateway.busy_thresholds
    current = table.of(update.model)
    changes = {}
    for field in msgspec.structs.fields(BusyThresholds):
        value = getattr(update, field.name)
        if value is msgspec.UNSET:
            continue
        changes[field.name] = field.default if value is None else value  # the bounds are checked by decoding
    if changes:
        current = msgspec.structs.replace(current, **changes)
        table.set(update.model, current)
    send_json(proto, 200, _answer(update.model, current))
