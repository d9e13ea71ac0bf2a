"""Structured logging on stderr, quiet (warning) by default: logfmt-style text or JSON lines.

Every line carries the time, level, process title and pid, logger, message, the ``extra`` fields of the
call and, while a request is being served, its ``request_id``. Secrets never go into log calls: request
bodies and headers are not logged.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextvars import ContextVar

import orjson

from ..config.log_spec import parse_log_spec

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord, process_name: str) -> dict:
    entry = {
        "ts": round(time.time(), 3),
        "level": record.levelname.lower(),
        "process": process_name,
        "pid": os.getpid(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    request_id = REQUEST_ID.get()
    if request_id is not None:
        entry["request_id"] = request_id
    for key, value in vars(record).items():
        if key not in _STANDARD_ATTRS:
            entry[key] = value
    return entry


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        entry = _fields(record, self.process_name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-11-27T12:00:00.123Z warning registry[123] msg="..." key=value ...`` (logfmt-style)."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        entry = _fields(record, self.process_name)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(entry.pop("ts")))
        head = f"{stamp}Z {entry.pop('level')} {entry.pop('process')}[{entry.pop('pid')}] {entry.pop('logger')}"
        pairs = " ".join(f"{key}={_quote(value)}" for key, value in entry.items())
        line = f"{head} {pairs}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n'):
        return text
    return orjson.dumps(text).decode()


def setup_logging(level: str, process_name: str, log_format: str = "text") -> None:
    """Route the root logger to stderr in ``log_format`` (text | json) at ``level``: a ``--log-level`` value, a
    level with optional per-logger levels (``info,frontend.router=debug``; ``config/log_spec.py``)."""
    spec = parse_log_spec(level)
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter(process_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(spec.root.upper())
    for name, logger_level in spec.loggers.items():
        logging.getLogger(name).setLevel(logger_level.upper())
