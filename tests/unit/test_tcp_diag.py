"""The kernel's count of the bytes a TCP peer acknowledged (frontend/transport/tcp_diag.py), on real sockets."""

from __future__ import annotations

import socket
import time

import pytest

from frontend.transport.tcp_diag import open_tcp_diag, split_host_port

diag = open_tcp_diag()
pytestmark = pytest.mark.skipif(diag is None, reason="no sock_diag netlink socket on this platform")


def teardown_module() -> None:
    if diag is not None:
        diag.close()


def _acked_eventually(connection, at_least: int) -> int:
    deadline = time.monotonic() + 5
    while True:
        acked = diag.bytes_acked(connection)
        if acked is not None and acked >= at_least or time.monotonic() > deadline:
            return acked
        time.sleep(0.01)


def _gone_eventually(connection) -> bool:
    deadline = time.monotonic() + 5
    while diag.bytes_acked(connection) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_counts_what_the_peer_received_and_forgets_a_closed_connection(bind):
    with socket.socket() as listener:
        listener.bind((bind, 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        server, peer = listener.accept()
        connection = diag.connection(f"{bind}:{port}", f"{peer[0]}:{peer[1]}")  # as Granian's scope gives them
        assert connection is not None
        start = diag.bytes_acked(connection)
        server.setblocking(False)
        sent = 0
        try:
            while sent < 8 << 20:
                sent += server.send(b"x" * 65536)
        except BlockingIOError:
            pass  # the client does not read: the kernel's buffers are full
        stalled = diag.bytes_acked(connection) - start
        assert stalled < sent  # what the client has not received yet is not acknowledged
        received = 0
        client.settimeout(5)
        while received < 1 << 20:
            received += len(client.recv(1 << 20))
        assert _acked_eventually(connection, start + received) - start >= received
        client.close()  # the server's end is in CLOSE_WAIT: no longer established
        assert _gone_eventually(connection)
        server.close()


def test_addresses_it_cannot_look_up():
    assert split_host_port("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_host_port("[::1]:8080") == ("::1", 8080)
    assert split_host_port("/run/frontend.sock") is None
    assert diag.connection("/run/frontend.sock", "") is None
    assert diag.connection("127.0.0.1:80", "not-an-ip:5") is None
    mapped = diag.connection("[::]:80", "[::ffff:127.0.0.1]:40000")  # a dual-stack listener's IPv4 client
    assert mapped is not None and mapped.family == socket.AF_INET and mapped.remote == bytes([127, 0, 0, 1])
