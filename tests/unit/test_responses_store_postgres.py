"""The PostgreSQL store of Responses API responses against a real server (Debian's postgresql, started here):
put/get/delete across handles, TTL, size bound, concurrent writers, schema creation racing, an unreachable or
vanished server, and the password kept out of every message."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import psycopg
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from postgres_support import PASSWORD, PostgresServer, postgres  # noqa: E402, F401

from frontend.stores import responses_pg  # noqa: E402
from frontend.stores.responses import StoreUnavailable, open_response_store  # noqa: E402
from frontend.stores.responses_pg import TABLE, PostgresResponseStore, prepare, redact  # noqa: E402


@pytest.fixture
def url(postgres):
    """The server's URL with an empty store table."""
    prepare(postgres.url)
    with psycopg.connect(postgres.url, autocommit=True) as connection:
        connection.execute(f"TRUNCATE {TABLE}")
    return postgres.url


def _execute(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def test_put_get_delete_across_handles(url, run):
    async def main():
        writer, reader = open_response_store("", url, 60, 1 << 20), open_response_store("", url, 60, 1 << 20)
        assert isinstance(writer, PostgresResponseStore)
        await writer.put("resp_1", b'{"id":"resp_1"}', b"[]")
        stored = await reader.get("resp_1")
        assert (stored.response, stored.conversation) == (b'{"id":"resp_1"}', b"[]")
        assert await reader.get("resp_2") is None
        await writer.put("resp_1", b'{"id":"resp_1","v":2}', b"[1]")  # replaced
        assert (await reader.get("resp_1")).conversation == b"[1]"
        assert await reader.delete("resp_1") is True
        assert await writer.get("resp_1") is None and await writer.delete("resp_1") is False
        await writer.close()
        await reader.close()

    run(main())


def test_expired_responses_are_gone(url, run, monkeypatch):
    monkeypatch.setattr(responses_pg, "PRUNE_EVERY_S", 0.0)

    async def main():
        store = PostgresResponseStore(url, 100, 1 << 20)
        await store.put("old", b"{}", b"[]")
        _execute(url, f"UPDATE {TABLE} SET created = now() - interval '101 seconds' WHERE id = 'old'")
        assert await store.get("old") is None and await store.delete("old") is False
        await store.put("new", b"{}", b"[]")  # prunes: the old row is deleted
        assert _execute(url, f"SELECT id FROM {TABLE}") == [("new",)]
        await store.close()

    run(main())


def test_size_bound_drops_the_oldest(url, run, monkeypatch):
    monkeypatch.setattr(responses_pg, "PRUNE_EVERY_S", 0.0)
    big = b"x" * 100_000

    async def main():
        store = PostgresResponseStore(url, 3600, 1_000_000)
        for index in range(30):
            await store.put(f"r{index}", big, b"[]")
        assert await store.get("r29") is not None
        assert await store.get("r0") is None
        [(rows, used)] = _execute(url, f"SELECT count(*), sum(bytes) FROM {TABLE}")
        assert used <= 1_000_000 and rows == 9  # the newest that fit
        await store.close()

    run(main())


def test_concurrent_writers_in_processes_and_tasks(url):
    """Four handles (as four HTTP processes would hold), each writing 50 responses from 10 tasks at once, pruning
    on every write: every response is stored and readable from another handle."""
    ids = [[f"w{writer}-{index}" for index in range(50)] for writer in range(4)]
    errors: list[BaseException] = []

    def writer(names: list[str]) -> None:
        async def main():
            store = PostgresResponseStore(url, 3600, 1 << 30)
            queue = list(names)

            async def task():
                while queue:
                    name = queue.pop()
                    await store.put(name, b'{"id":"%s"}' % name.encode(), b"[]")
            await asyncio.gather(*(task() for _ in range(10)))
            await store.close()
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    original = responses_pg.PRUNE_EVERY_S
    responses_pg.PRUNE_EVERY_S = 0.0
    try:
        threads = [threading.Thread(target=writer, args=(names,)) for names in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        responses_pg.PRUNE_EVERY_S = original
    assert not errors, errors
    assert _execute(url, f"SELECT count(*) FROM {TABLE}") == [(200,)]

    async def read():
        store = PostgresResponseStore(url, 3600, 1 << 30)
        found = [await store.get(name) for names in ids for name in names]
        await store.close()
        return found
    assert all(found is not None for found in asyncio.run(read()))


def test_schema_creation_races(postgres):
    """Frontends starting together: prepare() in 8 threads on a fresh database, none fails."""
    _execute(postgres.url, f"DROP TABLE IF EXISTS {TABLE}")
    errors: list[BaseException] = []

    def start():
        try:
            prepare(postgres.url)
        except BaseException as exc:
            errors.append(exc)
    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert _execute(postgres.url, f"SELECT count(*) FROM {TABLE}") == [(0,)]


def test_unreachable_database_names_the_url_without_password(postgres):
    unreachable = postgres.url.replace(f":{postgres.port}/", ":1/")
    with pytest.raises(StoreUnavailable) as caught:
        prepare(unreachable)
    message = str(caught.value)
    assert "postgresql://postgres:***@127.0.0.1:1/postgres" in message and PASSWORD not in message
    with pytest.raises(StoreUnavailable) as caught:
        prepare(postgres.url.replace(PASSWORD, "wrong-" + PASSWORD))  # the driver's message is scrubbed too
    assert "password authentication failed" in str(caught.value) and PASSWORD not in str(caught.value)


def test_redact():
    assert redact("postgresql://u:p%40ss@h:5432/db?sslmode=require") == "postgresql://u:***@h:5432/db?sslmode=require"
    assert redact("postgresql://u@h/db?password=x&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"
    assert redact("postgresql://h/db") == "postgresql://h/db"


def test_a_vanished_server_is_unavailable_then_recovers(run, monkeypatch):
    """Its own server: stopped under a store with open connections, every operation is StoreUnavailable within
    the timeout, however long the outage; started again, the same store works within the timeout plus the
    reconnection window (not after the pool's exponential backoff, which an outage of several seconds grows)."""
    monkeypatch.setattr(responses_pg, "TIMEOUT_S", 1.0)
    server = PostgresServer().start()
    try:
        prepare(server.url)

        async def main():
            store = PostgresResponseStore(server.url, 3600, 1 << 20)
            await store.put("kept", b"{}", b"[]")
            server.stop()
            for operation in (store.get("kept"), store.delete("kept"), store.put("other", b"{}", b"[]")):
                with pytest.raises(StoreUnavailable) as caught:
                    await operation
                assert PASSWORD not in str(caught.value) and ":***@" in str(caught.value)
            for _ in range(5):  # a longer outage: the pool's backoff would reach 8 s and more
                with pytest.raises(StoreUnavailable):
                    await store.get("kept")
            server.start()
            started = time.monotonic()
            while True:
                try:
                    assert (await store.get("kept")) is not None
                    break
                except StoreUnavailable:
                    assert time.monotonic() - started < 1.0 + responses_pg.RECONNECT_S + 1.0
            await store.close()

        run(main())
    finally:
        server.close()
