"""DisconnectWatch (frontend/pipeline/disconnect.py): fires once on disconnect, asks for the disconnect awaitable
only after WATCH_AFTER_S, and stop() leaves nothing behind."""

import asyncio
import gc
import weakref

from frontend.pipeline import disconnect
from frontend.pipeline.disconnect import SWEEP_EVERY_S, WATCH_AFTER_S, DisconnectWatch


class Owner:
    def __init__(self) -> None:
        self.calls = 0

    def gone(self) -> None:
        self.calls += 1


class Source:
    """Stands in for Granian's ``proto.client_disconnect``: counts the awaitables it made."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future = loop.create_future()
        self.asked = 0

    def __call__(self) -> asyncio.Future:
        self.asked += 1
        return self.future


def test_fires_when_the_client_disconnects(monkeypatch):
    monkeypatch.setattr(disconnect, "WATCH_AFTER_S", 0.0)

    async def scenario():
        source, owner = Source(asyncio.get_running_loop()), Owner()
        DisconnectWatch(asyncio.get_running_loop(), source, owner.gone)
        await asyncio.sleep(0.01)
        source.future.set_result(None)
        await asyncio.sleep(0)
        return owner.calls, source.asked

    assert asyncio.run(scenario()) == (1, 1)


def test_a_short_request_never_asks_and_an_early_disconnect_is_seen_when_the_watch_starts():
    async def scenario():
        loop = asyncio.get_running_loop()
        short, long, owner = Source(loop), Source(loop), Owner()
        DisconnectWatch(loop, short, owner.gone).stop()  # answered before WATCH_AFTER_S
        DisconnectWatch(loop, long, owner.gone)
        long.future.set_result(None)  # the client left at once: Granian keeps the notice
        await asyncio.sleep(WATCH_AFTER_S / 2)
        calls_before = owner.calls
        await asyncio.sleep(WATCH_AFTER_S)
        return short.asked, long.asked, calls_before, owner.calls

    assert asyncio.run(scenario()) == (0, 1, 0, 1)


def test_stop_drops_the_callback_so_the_owner_can_be_freed(monkeypatch):
    monkeypatch.setattr(disconnect, "WATCH_AFTER_S", 0.0)

    async def scenario():
        # stands in for Granian's awaitable, which keeps done callbacks after cancel: keep it referenced
        source, owner = Source(asyncio.get_running_loop()), Owner()
        ref = weakref.ref(owner)
        watch = DisconnectWatch(asyncio.get_running_loop(), source, owner.gone)
        await asyncio.sleep(0.01)
        assert source.asked == 1
        watch.stop()
        watch.stop()  # idempotent
        # stopped before it asks: the timer goes too
        unstarted = DisconnectWatch(asyncio.get_running_loop(), source, owner.gone)
        unstarted.stop()
        del owner, watch, unstarted
        await asyncio.sleep(0)
        gc.collect()
        return ref() is None, source

    freed, _ = asyncio.run(scenario())
    assert freed


def test_watches_made_apart_start_no_sooner_than_due_and_stopped_ones_never_ask():
    """The watches of a loop share one timer (``_Waiting``): each still waits its own ``WATCH_AFTER_S``."""

    async def scenario():
        loop = asyncio.get_running_loop()
        made = []
        for index in range(20):
            source = Source(loop)
            watch = DisconnectWatch(loop, source, Owner().gone)
            made.append((loop.time(), source))
            if index % 2:
                watch.stop()
            await asyncio.sleep(0.002)
        asked_after: dict[int, float] = {}
        end = loop.time() + WATCH_AFTER_S + SWEEP_EVERY_S + 1.0
        while loop.time() < end and len(asked_after) < 10:
            for index, (created, source) in enumerate(made):
                if source.asked and index not in asked_after:
                    asked_after[index] = loop.time() - created
            await asyncio.sleep(0.001)
        return asked_after, [source.asked for _, source in made]

    asked_after, asked = asyncio.run(scenario())
    assert sorted(asked_after) == list(range(0, 20, 2))
    assert asked == [1, 0] * 10
    assert min(asked_after.values()) >= WATCH_AFTER_S
