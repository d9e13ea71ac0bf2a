"""The SQLite store of Responses API responses: put/get/delete, TTL, size bound, several processes' handles;
which store the settings pick, the PostgreSQL URL's checks, and psycopg imported only for PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import msgspec
import pytest

from frontend.config.loader import load_config
from frontend.config.sections import ParsersConfig, PreprocessConfig
from frontend.gateway.settings import ApiSettings
from frontend.protocol.errors import ConfigError
from frontend.stores import responses as responses_store
from frontend.stores.responses import SqliteResponseStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_put_get_delete_across_handles(tmp_path):
    path = str(tmp_path / "store.db")

    async def main():
        writer, reader = SqliteResponseStore(path, 60, 1 << 20), SqliteResponseStore(path, 60, 1 << 20)
        await writer.put("resp_1", b'{"id":"resp_1"}', b"[]")
        stored = await reader.get("resp_1")
        assert (stored.response, stored.conversation) == (b'{"id":"resp_1"}', b"[]")
        assert await reader.get("resp_2") is None
        assert await reader.delete("resp_1") is True
        assert await writer.get("resp_1") is None and await writer.delete("resp_1") is False
        await writer.close()
        await reader.close()

    asyncio.run(main())


def test_expired_responses_are_gone(tmp_path, monkeypatch):
    async def main():
        store = SqliteResponseStore(str(tmp_path / "store.db"), 100, 1 << 20)
        await store.put("old", b"{}", b"[]")
        now = responses_store.time.time()
        monkeypatch.setattr(responses_store.time, "time", lambda: now + 101)
        assert await store.get("old") is None
        await store.put("new", b"{}", b"[]")  # prunes: the old row is deleted
        count = await store._run(lambda: store._connection().execute("SELECT count(*) FROM responses").fetchone())
        assert count == (1,)
        await store.close()

    asyncio.run(main())


def test_size_bound_drops_the_oldest(tmp_path, monkeypatch):
    monkeypatch.setattr(responses_store, "PRUNE_EVERY_S", 0.0)
    big = b"x" * 100_000

    async def main():
        store = SqliteResponseStore(str(tmp_path / "store.db"), 3600, 1_000_000)
        for index in range(30):
            await store.put(f"r{index}", big, b"[]")
        assert await store.get("r29") is not None
        assert await store.get("r0") is None
        used = await store._run(lambda: SqliteResponseStore._used_bytes(store._connection()))
        assert used <= 1_000_000
        await store.close()

    asyncio.run(main())


def test_settings_pick_postgresql_over_the_file():
    parsers = ParsersConfig(responses_store_url="postgresql://u:pw@db/r", responses_store_path="/tmp/r.db")
    apis = ApiSettings.from_config(parsers, PreprocessConfig(), "/run")
    assert (apis.responses_store_url, apis.responses_store_path) == ("postgresql://u:pw@db/r", "")
    off = ApiSettings.from_config(msgspec.structs.replace(parsers, responses_store=False), PreprocessConfig(), "/run")
    assert (off.responses_store_url, off.responses_store_path) == ("", "")
    default = ApiSettings.from_config(ParsersConfig(), PreprocessConfig(), "/run")
    assert (default.responses_store_url, default.responses_store_path) == ("", "/run/responses.sqlite3")


def test_the_url_must_be_postgresql_and_is_never_echoed():
    with pytest.raises(ConfigError) as caught:
        load_config(["--responses-store-url", "mysql://u:hunter2@db/r"], {})
    assert "postgresql://" in str(caught.value) and "hunter2" not in str(caught.value)


def test_the_sqlite_store_does_not_import_psycopg():
    code = ("import sys, frontend.daemon.supervisor, frontend.http.responses_api; "
            "assert not [m for m in sys.modules if m.startswith('psycopg')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
