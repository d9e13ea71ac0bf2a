"""The SQLite store of Responses API responses: put/get/delete, TTL, size bound, several processes' handles."""

from __future__ import annotations

import asyncio

from frontend.stores import responses as responses_store
from frontend.stores.responses import ResponseStore


def test_put_get_delete_across_handles(tmp_path):
    path = str(tmp_path / "store.db")

    async def main():
        writer, reader = ResponseStore(path, 60, 1 << 20), ResponseStore(path, 60, 1 << 20)
        await writer.put("resp_1", b'{"id":"resp_1"}', b"[]")
        stored = await reader.get("resp_1")
        assert (stored.response, stored.conversation) == (b'{"id":"resp_1"}', b"[]")
        assert await reader.get("resp_2") is None
        assert await reader.delete("resp_1") is True
        assert await writer.get("resp_1") is None and await writer.delete("resp_1") is False
        writer.close()
        reader.close()

    asyncio.run(main())


def test_expired_responses_are_gone(tmp_path, monkeypatch):
    async def main():
        store = ResponseStore(str(tmp_path / "store.db"), 100, 1 << 20)
        await store.put("old", b"{}", b"[]")
        now = responses_store.time.time()
        monkeypatch.setattr(responses_store.time, "time", lambda: now + 101)
        assert await store.get("old") is None
        await store.put("new", b"{}", b"[]")  # prunes: the old row is deleted
        count = await store._run(lambda: store._connection().execute("SELECT count(*) FROM responses").fetchone())
        assert count == (1,)
        store.close()

    asyncio.run(main())


def test_size_bound_drops_the_oldest(tmp_path, monkeypatch):
    monkeypatch.setattr(responses_store, "PRUNE_EVERY_S", 0.0)
    big = b"x" * 100_000

    async def main():
        store = ResponseStore(str(tmp_path / "store.db"), 3600, 1_000_000)
        for index in range(30):
            await store.put(f"r{index}", big, b"[]")
        assert await store.get("r29") is not None
        assert await store.get("r0") is None
        used = await store._run(lambda: ResponseStore._used_bytes(store._connection()))
        assert used <= 1_000_000
        store.close()

    asyncio.run(main())
