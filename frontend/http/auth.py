"""The API-key check of the HTTP front door (``--api-key``, ``--api-key-file``).

``app.py`` calls :func:`authenticate` for every request whose path ``--api-key-exempt`` does not open, before
the body is read (a 401 costs nothing), also for paths that are not served (no probing for endpoints without a
key). The route's ``auth`` says which headers carry the key: ``Authorization: Bearer <key>`` everywhere, and
``x-api-key: <key>`` too on the Anthropic routes (Anthropic's SDK sends either). The 401 has the route's error
shape (``render_error``): OpenAI's with ``code: invalid_api_key`` and ``WWW-Authenticate: Bearer``, or
Anthropic's ``authentication_error``. Its message never contains the key that was sent.
"""

from __future__ import annotations

from typing import Any

from ..gateway.auth import ApiKeys, bearer_token
from ..protocol.errors import Unauthorized

# route.auth -> (message without a key, message with a wrong one)
MESSAGES = {
    "openai": ("You didn't provide an API key: send it as an `Authorization: Bearer <key>` header.",
               "Incorrect API key provided."),
    "anthropic": ("x-api-key header is required (or `Authorization: Bearer <key>`).", "invalid x-api-key"),
}


def authenticate(keys: ApiKeys, headers: Any, auth: str) -> None:
    """Return when ``headers`` carry a configured key in a header the route takes; else raise Unauthorized."""
    presented = [bearer_token(headers.get("authorization"))]
    if auth == "anthropic":
        presented.append(headers.get("x-api-key"))
    accepted = False
    for key in presented:
        accepted |= keys.accepts(key)  # every header checked: no early exit
    if accepted:
        return
    missing, wrong = MESSAGES.get(auth, MESSAGES["openai"])
    raise Unauthorized(wrong if any(presented) else missing)
