"""Stored Responses API responses in PostgreSQL (``--responses-store-url``), shared by several frontends.

The same behaviour as the SQLite store (``responses.py``): a row per response (the response as served and the
conversation after it), invisible and deleted after the TTL, the oldest deleted first while the stored bytes
exceed the size limit. Times are the database's clock (``now()``), so frontends whose clocks differ agree on
what has expired.

Each HTTP process has a psycopg ``AsyncConnectionPool`` on its event loop: a query is network I/O that the loop
awaits, so no thread hop is needed (SQLite's calls are blocking file I/O, hence its thread), and the pool bounds
the process's connections. The daemon creates the schema at start (``prepare``), under an advisory lock so that
frontends starting together do not race on ``CREATE TABLE``; an unreachable database is then a start-up error.
Later failures (the server gone, no connection within ``TIMEOUT_S``) raise ``StoreUnavailable``. A lost
connection is retried in the background for ``RECONNECT_S`` only: the pool's retries back off exponentially
(1, 2, 4 ... s), so after a long outage they would leave the store unavailable for minutes after the server is
back; past ``RECONNECT_S`` the next operation connects afresh instead.
Only this module imports psycopg: the SQLite default does not need it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from .responses import StoreOperations, StoredResponse, StoreUnavailable

TABLE = "dynamo_responses"
# per HTTP process: a store operation is one short statement per request turn, so a few connections keep up
# with a process's requests, and every process of every frontend holding few leaves PostgreSQL's default
# max_connections (100) to many of them
POOL_MAX_SIZE = 4
TIMEOUT_S = 5.0  # a store operation (waiting for a connection included) that takes longer fails: a 503
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout (whole seconds)
RECONNECT_S = 2.0  # a lost connection's background retries stop after this; the next operation connects afresh
PRUNE_EVERY_S = 10.0  # a process prunes at most this often (on a write)
LOCK_KEY = 0x64796E5F72657370  # pg advisory lock ("dyn_resp"): schema creation, pruning

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, created timestamptz NOT NULL DEFAULT now(), "
    "bytes integer NOT NULL, response bytea NOT NULL, conversation bytea NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_created ON {TABLE} (created)",
)
_LIVE = "created >= now() - make_interval(secs => %s)"
_PUT = (f"INSERT INTO {TABLE} (id, bytes, response, conversation) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO "
        "UPDATE SET created = now(), bytes = excluded.bytes, response = excluded.response, "
        "conversation = excluded.conversation")
_GET = f"SELECT response, conversation FROM {TABLE} WHERE id = %s AND {_LIVE}"
_DELETE = f"DELETE FROM {TABLE} WHERE id = %s AND {_LIVE}"
_DELETE_EXPIRED = f"DELETE FROM {TABLE} WHERE NOT {_LIVE}"
# the rows past the newest that fit in the size limit (but not the one just written)
_DELETE_OLDEST = (f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM (SELECT id, sum(bytes) OVER (ORDER BY "
                  f"created DESC, id DESC) AS newer FROM {TABLE}) ranked WHERE newer > %s AND id != %s)")


def redact(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = urlencode([(key, "***" if key == "password" else value) for key, value in parse_qsl(parts.query)],
                      safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _failure(url: str, exc: BaseException) -> str:
    """What went wrong, naming the database without its password (scrubbed from the driver's message too)."""
    message = str(exc) or type(exc).__name__
    password = urlsplit(url).password
    if password:
        message = message.replace(password, "***")
    return f"the responses store {redact(url)} is unavailable: {message}"


def prepare(url: str) -> None:
    """At start: connect once and create the schema if missing; StoreUnavailable when that fails."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            for statement in _SCHEMA:
                connection.execute(statement)
    except psycopg.Error as exc:
        raise StoreUnavailable(_failure(url, exc)) from None


class PostgresResponseStore(StoreOperations):
    """One HTTP process's handle on the database; see the module docstring."""

    def __init__(self, url: str, ttl_s: float, max_bytes: int) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._pool = AsyncConnectionPool(url, min_size=1, max_size=POOL_MAX_SIZE, open=False, timeout=TIMEOUT_S,
                                         reconnect_timeout=RECONNECT_S, name="responses-store",
                                         check=AsyncConnectionPool.check_connection,
                                         kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S})
        self._opened = False
        self._pruned_at = 0.0

    async def close(self) -> None:
        await self._pool.close()

    async def _run(self, operation: Any, *args: Any) -> Any:
        """``operation(connection, *args)`` on a pooled connection, within ``TIMEOUT_S``."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                if not self._opened:
                    self._opened = True
                    await self._pool.open()
                async with self._pool.connection() as connection:
                    return await operation(connection, *args)
        except (psycopg.Error, TimeoutError) as exc:
            raise StoreUnavailable(_failure(self.url, exc)) from None

    async def _put(self, connection: psycopg.AsyncConnection, response_id: str, response: bytes,
                   conversation: bytes) -> None:
        await connection.execute(_PUT, (response_id, len(response) + len(conversation), response, conversation))
        now = time.monotonic()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await self._prune(connection, response_id)

    async def _get(self, connection: psycopg.AsyncConnection, response_id: str) -> StoredResponse | None:
        row = await (await connection.execute(_GET, (response_id, self.ttl_s))).fetchone()
        return StoredResponse(row[0], row[1]) if row else None

    async def _delete(self, connection: psycopg.AsyncConnection, response_id: str) -> bool:
        return (await connection.execute(_DELETE, (response_id, self.ttl_s))).rowcount > 0

    async def _prune(self, connection: psycopg.AsyncConnection, keep: str) -> None:
        """Delete expired rows, then the oldest until the rest fit the limit; one pruner at a time (the others
        skip), so that concurrent deletes never deadlock."""
        async with connection.transaction():
            locked = await (await connection.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,))).fetchone()
            if locked and locked[0]:
                await connection.execute(_DELETE_EXPIRED, (self.ttl_s,))
                await connection.execute(_DELETE_OLDEST, (self.max_bytes, keep))
