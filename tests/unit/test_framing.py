"""The request plane's framing (frontend/transport/framing.py): frames come out whole and in order however TCP
splits or joins them; a frame over the limit closes the connection; endpoints parse both ways."""

from __future__ import annotations

import pytest

from frontend.transport.framing import HEADER, FramedProtocol, endpoint_of, frame, frames, tcp_address


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class Collector(FramedProtocol):
    max_frame_bytes = 1000

    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[bytes] = []
        self.connection_made(FakeTransport())

    def on_frame(self, payload: memoryview) -> None:
        self.payloads.append(bytes(payload))


PAYLOADS = [b"", b"a", b"hello world", bytes(range(256)) * 3]


def test_frames_come_out_whole_however_the_stream_is_cut():
    stream = frames(PAYLOADS) + frame(b"last")
    for cut in range(1, len(stream)):  # every two-piece cut, including inside a header
        collector = Collector()
        collector.data_received(stream[:cut])
        collector.data_received(stream[cut:])
        assert collector.payloads == PAYLOADS + [b"last"], cut
    byte_by_byte = Collector()
    for i in range(len(stream)):
        byte_by_byte.data_received(stream[i:i + 1])
    assert byte_by_byte.payloads == PAYLOADS + [b"last"]
    assert byte_by_byte.heard


def test_a_frame_over_the_limit_closes_the_connection_and_nothing_after_it_is_read():
    collector = Collector()
    collector.data_received(frame(b"ok") + HEADER.pack(1001) + b"x" * 10 + frame(b"after"))
    assert collector.payloads == [b"ok"]
    assert collector.transport.aborted


def test_a_long_frame_in_many_reads_comes_out_whole():
    collector = Collector()
    collector.max_frame_bytes = 1 << 20
    payload = bytes(range(256)) * 4096  # 1 MiB in 1,024 reads
    stream = frame(payload)
    for i in range(0, len(stream), 1024):
        collector.data_received(stream[i:i + 1024])
    assert collector.payloads == [payload]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "worker-3.example"])
def test_endpoints_round_trip(host):
    assert tcp_address(endpoint_of(host, 5555)) == (host, 5555)
    with pytest.raises(ValueError):
        tcp_address("ipc:///tmp/x")
