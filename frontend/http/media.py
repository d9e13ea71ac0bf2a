"""``GET /v1/media/{name}``: a generated image or video from the media store (``response_format: url``)."""

from __future__ import annotations

from ..gateway.state import Gateway
from ..protocol.errors import MethodNotAllowed, NotFoundRoute

PREFIX = "/v1/media/"


async def serve(gateway: Gateway, scope, proto, body: bytes) -> None:
    """The stored file with its content type; 404 once it expired or was pushed out by newer files."""
    if scope.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"method {scope.method} is not allowed on {PREFIX}{{name}}")
    found = gateway.media.get(scope.path[len(PREFIX):])
    if found is None:
        raise NotFoundRoute("no such media file (it expired, or was never stored here)")
    data, content_type = found
    headers = [("content-type", content_type), ("x-content-type-options", "nosniff"),
               ("cache-control", f"private, max-age={int(gateway.media.settings.ttl_s)}")]
    proto.response_bytes(200, headers, data)
