"""API keys as the serving processes hold them: digests, a constant-time check, and how a key is presented.

The daemon hashes every configured key once (SHA-256) and hands the HTTP and gRPC processes only the digests,
inside ``GatewaySettings`` (so no raw key is in their ``FRONTEND_GATEWAY_SETTINGS`` environment variable). A
presented key is hashed the same way and compared with ``hmac.compare_digest`` against every digest, all of
them whatever the outcome: the time taken says neither whether nor which key matched, and hashing first makes it
independent of the presented key's length too. A key with enough entropy (e.g. ``secrets.token_urlsafe(32)``)
cannot be found back from its unsalted digest.

How a key is presented: ``Authorization: Bearer <key>`` (:func:`bearer_token`), and on the Anthropic routes and
over gRPC also ``x-api-key: <key>``. The HTTP check is in ``http/app.py`` (before the body is read), the gRPC one
in ``grpc/auth.py``.
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from ..config.api_keys import configured_keys, exempt_paths
from ..config.sections import AuthConfig


def key_digest(key: str) -> bytes:
    """SHA-256 of a key's UTF-8 bytes (lone surrogates kept, so that different strings never share bytes)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys(msgspec.Struct, frozen=True):
    """The digests of the configured keys (none: no check) and the HTTP paths open without one."""

    digests: tuple[bytes, ...] = ()
    exempt: tuple[str, ...] = ()  # each path and every path below it

    @classmethod
    def from_keys(cls, keys: tuple[str, ...] | list[str], exempt: tuple[str, ...] = ()) -> "ApiKeys":
        return cls(digests=tuple(key_digest(key) for key in keys), exempt=tuple(exempt))

    @classmethod
    def from_config(cls, auth: AuthConfig) -> "ApiKeys":
        """From the daemon's ``auth`` section; reads ``--api-key-file`` (ConfigError naming the flag)."""
        return cls.from_keys(configured_keys(auth), exempt_paths(auth))

    @property
    def enabled(self) -> bool:
        """Keys are configured: requests must present one."""
        return bool(self.digests)

    def is_exempt(self, path: str) -> bool:
        """An HTTP path open without a key: one of ``exempt`` or below one."""
        return path in self.exempt or any(path.startswith(prefix + "/") for prefix in self.exempt)

    def accepts(self, key: str | None) -> bool:
        """``key`` is one of the configured keys (constant time over all of them; see the module docstring)."""
        if not key:
            return False
        digest = key_digest(key)
        matched = 0
        for expected in self.digests:
            matched |= hmac.compare_digest(digest, expected)
        return bool(matched)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (the scheme in any case), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
