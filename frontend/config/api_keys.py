"""The API keys the daemon is configured with: ``--api-key`` (a flag given several times, or a comma-separated
list; ``DYN_API_KEY``) plus the lines of ``--api-key-file``, and the paths ``--api-key-exempt`` opens.

The file holds one key per line; blank lines and lines whose first non-blank character is ``#`` are skipped,
and each line is stripped (a ``#`` inside a key is part of it). Problems are ConfigErrors naming the flag and
the line number, never the key. The daemon reads the file once at start-up (``GatewaySettings.from_config``);
what the serving processes get is only the keys' digests (``gateway/auth.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.errors import ConfigError
from .options import api_key_problem, split_list

if TYPE_CHECKING:
    from .sections import AuthConfig


def parse_key_file(text: str, path: str = "--api-key-file") -> list[str]:
    """The keys of a key file's text, in order; ConfigError (with the line number) on a malformed key."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        problem = api_key_problem(key)
        if problem:
            raise ConfigError(f"--api-key-file: {path} line {number}: {problem}")
        keys.append(key)
    return keys


def read_key_file(path: str) -> list[str]:
    """The keys in the file at ``path``; ConfigError when it cannot be read or holds no key."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"--api-key-file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--api-key-file: {path} is not UTF-8 text") from None
    keys = parse_key_file(text, path)
    if not keys:  # an empty file would silently turn the check off
        raise ConfigError(f"--api-key-file: {path} holds no key")
    return keys


def configured_keys(auth: AuthConfig) -> tuple[str, ...]:
    """Every configured key once, in order: ``--api-key``'s, then the file's. Empty: no key check."""
    keys = split_list(auth.api_key)
    if auth.api_key_file:
        keys += read_key_file(auth.api_key_file)
    return tuple(dict.fromkeys(keys))


def exempt_paths(auth: AuthConfig) -> tuple[str, ...]:
    """The ``--api-key-exempt`` paths, without a trailing slash."""
    return tuple(path.rstrip("/") or "/" for path in split_list(auth.api_key_exempt))
