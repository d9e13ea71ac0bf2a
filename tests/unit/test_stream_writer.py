"""The streamed response writer (frontend/http/streaming.py): events written "soon" in one loop turn go to the
client in one write at the end of the turn, or with what is sent after them in the turn; a client gone is seen."""

from __future__ import annotations

import asyncio

from frontend.http.streaming import StreamWriter


class Sent:
    """Granian's send's outcome: an awaitable that ends at once, or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def __iter__(self):
        return self

    def __next__(self):
        if self.error is not None:
            raise self.error
        raise StopIteration

    def __await__(self):
        return self


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.gone = False

    def send_bytes(self, data: bytes) -> Sent:
        if self.gone:
            return Sent(ConnectionResetError("the client left"))
        self.writes.append(data)
        return Sent()


def test_one_turns_events_are_one_write_and_a_send_takes_what_is_queued_in_front_in_one_write(run):
    async def scenario() -> tuple[list[bytes], int, bool]:
        transport = FakeTransport()
        writer = StreamWriter(transport)
        assert writer.ready()
        assert writer.write_soon(b"a") and writer.write_soon(b"b")
        assert transport.writes == []  # not before the end of the turn
        await asyncio.sleep(0)
        writer.write_soon(b"c")
        assert await writer.send(b"d")  # what was queued goes first, in the same write
        await asyncio.sleep(0)
        return transport.writes, writer.written, writer.closed

    assert run(scenario()) == ([b"ab", b"cd"], 4, False)


def test_a_client_gone_is_seen_at_the_write_and_nothing_more_is_queued(run):
    async def scenario() -> tuple[bool, bool, bool]:
        transport = FakeTransport()
        writer = StreamWriter(transport)
        transport.gone = True
        writer.write_soon(b"a")
        await asyncio.sleep(0)
        return writer.closed, writer.ready(), writer.write_soon(b"b")

    assert run(scenario()) == (True, False, False)


def test_what_is_written_later_goes_in_front_of_the_next_write(run):
    """``write_later`` (the chat stream's role chunk) has no write of its own: it goes with the first event."""
    async def scenario() -> list[bytes]:
        transport = FakeTransport()
        writer = StreamWriter(transport)
        writer.write_later(b"head")
        await asyncio.sleep(0)
        assert transport.writes == []  # nothing at the end of the turn
        writer.write_soon(b"a")
        await asyncio.sleep(0)
        writer.write_later(b"more")
        assert await writer.send(b"b")
        return transport.writes

    assert run(scenario()) == [b"heada", b"moreb"]


def test_what_would_reach_the_limit_with_what_is_queued_does_not_fit(run):
    """``fits`` counts the bytes queued for the end of the turn: the batch that reaches ``write_limit`` is written
    at once by ``send``, which then looks at the client (``stream_deltas``)."""
    async def scenario() -> tuple[bool, bool, bool, bool]:
        writer = StreamWriter(FakeTransport())
        writer.write_limit = 10
        first = writer.fits(6)
        writer.write_soon(b"123456")
        second, third = writer.fits(3), writer.fits(4)
        await asyncio.sleep(0)  # flushed: 6 written, nothing queued
        return first, second, third, writer.fits(3)

    assert run(scenario()) == (True, True, False, True)
