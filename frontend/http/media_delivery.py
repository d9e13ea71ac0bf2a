"""What the image and video endpoints share: sizes, running the request, and handing files to the client as
base64 or as a URL of the media store (``frontend/stores/media.py``)."""

from __future__ import annotations

import base64
import re

from ..gateway.state import Gateway
from ..pipeline.prepare import pinned_instance
from ..pipeline.unary import UnaryCall
from ..protocol.engine import MediaItem
from ..protocol.errors import EngineError, InvalidRequest
from ..stores.media import CONTENT_TYPES

MAX_SIDE = 4096
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


def parse_size(size: str | None) -> tuple[int, int]:
    """``WxH`` as (width, height); (0, 0) for ``auto`` or nothing (the engine's default)."""
    if size in (None, "", "auto"):
        return 0, 0
    match = _SIZE.fullmatch(size)
    if match is None or not all(1 <= int(side) <= MAX_SIDE for side in match.groups()):
        raise InvalidRequest(f"size must be WIDTHxHEIGHT with sides from 1 to {MAX_SIDE} (e.g. 1024x1024) or "
                             f"auto, not {size!r}", param="size")
    return int(match.group(1)), int(match.group(2))


def check_delivery(gateway: Gateway, response_format: str) -> None:
    """400 for ``url`` when this server keeps no media store."""
    if response_format == "url" and not gateway.media.enabled:
        raise InvalidRequest("response_format url is not available on this server (no media store); use "
                             "b64_json", param="response_format")


def deliver(gateway: Gateway, scope, item: MediaItem, response_format: str) -> tuple[str | None, str | None]:
    """(b64_json, url) of one generated file, as the request asked."""
    if item.format not in CONTENT_TYPES:
        raise EngineError(f"the worker returned a file of unknown format {item.format!r}")
    if response_format == "b64_json":
        return base64.b64encode(item.data).decode("ascii"), None
    name = gateway.media.put(item.data, item.format)
    host = scope.headers.get("host") or scope.authority or scope.server  # HTTP/2 has :authority, no Host
    return None, gateway.media.url(name, scope.scheme, host)


async def produce(gateway: Gateway, scope, proto, model, engine_request,
                  response_format: str) -> list[tuple[MediaItem, str | None, str | None]] | None:
    """Run a media request on a worker; each item with its ``(b64_json, url)``, or None if the client left."""
    async with UnaryCall(gateway, model, engine_request, pinned=pinned_instance(gateway, scope.headers),
                         disconnected=proto.client_disconnect) as call:
        result = await call.result()
    if result is None:
        return None
    return [(item, *deliver(gateway, scope, item, response_format)) for item in result.items]
