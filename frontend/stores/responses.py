"""Stored Responses API responses: one interface (:class:`ResponseStore`), two implementations.

* :class:`SqliteResponseStore`, the default: an embedded SQLite database shared by every HTTP worker process of
  one frontend. One file (``--responses-store-path``) in WAL mode, so the processes read and write it
  concurrently. Each process talks to SQLite from one thread of its own, so the event loop never blocks on it.
* ``PostgresResponseStore`` (``responses_pg.py``, ``--responses-store-url``): a PostgreSQL database shared by
  several frontends; psycopg is imported only then.

A row holds the response object as served (for ``GET /v1/responses/{id}``) and the conversation after it as
chat messages (for ``previous_response_id``). Rows older than the TTL are invisible and deleted; when the live
data grows past the size limit the oldest rows go first. A store that cannot answer raises
:class:`StoreUnavailable` (a 503 for the client).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol

from ..protocol.errors import ConfigError, FrontendError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    response BLOB NOT NULL,
    conversation BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_created ON responses (created);
"""
PRUNE_EVERY_S = 10.0  # a process prunes at most this often (on a write)
BUSY_TIMEOUT_MS = 5000


class StoredResponse:
    """A stored response: the response object's JSON and the conversation's JSON."""

    __slots__ = ("response", "conversation")

    def __init__(self, response: bytes, conversation: bytes) -> None:
        self.response = response
        self.conversation = conversation


class StoreUnavailable(FrontendError):
    """The store cannot be reached or did not answer (its message never holds a password)."""


class ResponseStore(Protocol):
    """What the Responses API needs from a store; every method may raise :class:`StoreUnavailable`."""

    async def put(self, response_id: str, response: bytes, conversation: bytes) -> None:
        """Store (or replace) a response and the conversation after it."""

    async def get(self, response_id: str) -> StoredResponse | None:
        """The unexpired response ``response_id``, or None."""

    async def delete(self, response_id: str) -> bool:
        """Delete an unexpired response; False when there was none."""

    async def close(self) -> None:
        """Release the store's connections and threads."""


def open_response_store(path: str, url: str, ttl_s: float, max_bytes: int) -> ResponseStore:
    """The PostgreSQL store at ``url`` if one is given, else the SQLite file at ``path``."""
    if url:
        from .responses_pg import PostgresResponseStore

        return PostgresResponseStore(url, ttl_s, max_bytes)
    return SqliteResponseStore(path, ttl_s, max_bytes)


def prepare_response_store(url: str) -> None:
    """At start, with a PostgreSQL URL: reach the database and create the schema if missing (StoreUnavailable
    when it cannot be reached, ConfigError when psycopg is not installed)."""
    if not url:
        return
    try:
        from . import responses_pg
    except ImportError as exc:
        raise ConfigError(f"--responses-store-url needs psycopg 3 and psycopg-pool (pip install "
                          f"'dynamo-py-frontend[postgres]'): {exc}") from None
    responses_pg.prepare(url)


class StoreOperations:
    """put, get and delete of a store: each is the implementation's ``_put`` / ``_get`` / ``_delete`` run by its
    ``_run`` (on a thread for SQLite, on a pooled connection for PostgreSQL)."""

    async def _run(self, operation: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    async def put(self, response_id: str, response: bytes, conversation: bytes) -> None:
        await self._run(self._put, response_id, response, conversation)

    async def get(self, response_id: str) -> StoredResponse | None:
        return await self._run(self._get, response_id)

    async def delete(self, response_id: str) -> bool:
        return await self._run(self._delete, response_id)


class SqliteResponseStore(StoreOperations):
    """Asynchronous access to the store file; see the module docstring."""

    def __init__(self, path: str, ttl_s: float, max_bytes: int) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responses-store")
        self._db: sqlite3.Connection | None = None
        self._pruned_at = 0.0

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        except sqlite3.DatabaseError as exc:  # locked past the busy timeout, disk full, unreadable
            raise StoreUnavailable(f"the responses store {self.path} failed: {exc}") from exc

    # ---- in the store thread ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _put(self, response_id: str, response: bytes, conversation: bytes) -> None:
        db = self._connection()
        now = time.time()
        db.execute("INSERT OR REPLACE INTO responses (id, created, response, conversation) VALUES (?, ?, ?, ?)",
                   (response_id, now, response, conversation))
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            self._prune(db, now, response_id)

    def _get(self, response_id: str) -> StoredResponse | None:
        row = self._connection().execute(
            "SELECT response, conversation FROM responses WHERE id = ? AND created >= ?",
            (response_id, time.time() - self.ttl_s)).fetchone()
        return StoredResponse(row[0], row[1]) if row else None

    def _delete(self, response_id: str) -> bool:
        cursor = self._connection().execute("DELETE FROM responses WHERE id = ? AND created >= ?",
                                            (response_id, time.time() - self.ttl_s))
        return cursor.rowcount > 0

    def _prune(self, db: sqlite3.Connection, now: float, keep: str) -> None:
        """Delete expired rows, then the oldest tenth (but not ``keep``) until the live pages fit the limit."""
        db.execute("DELETE FROM responses WHERE created < ?", (now - self.ttl_s,))
        while self._used_bytes(db) > self.max_bytes:
            rows = db.execute("SELECT count(*) FROM responses").fetchone()[0]
            deleted = db.execute("DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE id != ? "
                                 "ORDER BY created LIMIT ?)", (keep, max(1, rows // 10))).rowcount
            if not deleted:
                break

    @staticmethod
    def _used_bytes(db: sqlite3.Connection) -> int:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * db.execute("PRAGMA page_size").fetchone()[0]

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
