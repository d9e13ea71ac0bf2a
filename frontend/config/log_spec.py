"""The ``--log-level`` value: a level, optionally with per-logger levels, in Dynamo's ``DYN_LOG`` syntax.

``info`` or ``info,frontend.router=debug,frontend.registry=error``: the first bare level is the root's (warning
when none is given), each ``target=level`` sets one logger. Dynamo's Rust-style targets (``dynamo_llm::kv_router``)
are accepted with ``::`` read as ``.``; its ``trace`` is ``debug`` and ``warn`` is ``warning`` here.
"""

from __future__ import annotations

from typing import NamedTuple

LEVELS = ("debug", "info", "warning", "error")
_SYNONYMS = {"trace": "debug", "warn": "warning", "critical": "error", "off": "error"}
DEFAULT_LEVEL = "warning"


class LogSpec(NamedTuple):
    """A parsed ``--log-level``: the root level and the level of each named logger."""

    root: str
    loggers: dict[str, str]


def _level(word: str) -> str | None:
    word = word.strip().lower()
    word = _SYNONYMS.get(word, word)
    return word if word in LEVELS else None


def parse_log_spec(spec: str) -> LogSpec:
    """Parse a ``--log-level`` value; raises ValueError naming the bad part."""
    root: str | None = None
    loggers: dict[str, str] = {}
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        target, sep, word = part.rpartition("=")
        level = _level(word)
        if level is None:
            raise ValueError(f"{word.strip()!r} is not a log level ({', '.join(LEVELS)})")
        if not sep:
            root = level
        elif not target.strip():
            raise ValueError(f"{part!r} names no logger before '='")
        else:
            loggers[target.strip().replace("::", ".")] = level
    return LogSpec(root or DEFAULT_LEVEL, loggers)


def log_spec_problem(spec: str) -> str | None:
    """The option validator: what is wrong with a ``--log-level`` value, or None."""
    try:
        parse_log_spec(spec)
    except ValueError as exc:
        return str(exc)
    return None


def root_level(spec: str) -> str:
    """The root level of a ``--log-level`` value (what Granian and plain-level consumers take)."""
    return parse_log_spec(spec).root
