"""DisconnectWatch (frontend/pipeline/disconnect.py): fires once on disconnect, and stop() leaves nothing behind."""

import asyncio
import gc
import weakref

from frontend.pipeline.disconnect import DisconnectWatch


class Owner:
    def __init__(self) -> None:
        self.calls = 0

    def gone(self) -> None:
        self.calls += 1


def test_fires_when_the_client_disconnects():
    async def scenario():
        loop = asyncio.get_running_loop()
        disconnected = loop.create_future()
        owner = Owner()
        DisconnectWatch(disconnected, owner.gone)
        disconnected.set_result(None)
        await asyncio.sleep(0)
        return owner.calls

    assert asyncio.run(scenario()) == 1


def test_stop_drops_the_callback_so_the_owner_can_be_freed():
    async def scenario():
        loop = asyncio.get_running_loop()
        # stands in for Granian's awaitable, which keeps done callbacks after cancel: keep it referenced
        disconnected = loop.create_future()
        owner = Owner()
        ref = weakref.ref(owner)
        watch = DisconnectWatch(disconnected, owner.gone)
        watch.stop()
        watch.stop()  # idempotent
        del owner, watch
        await asyncio.sleep(0)
        gc.collect()
        return ref() is None, disconnected

    freed, _ = asyncio.run(scenario())
    assert freed
