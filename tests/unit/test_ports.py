"""transport/ports.py: a port for a listener bound later is free now and outside the ephemeral range."""

from __future__ import annotations

import socket

from frontend.transport.ports import ephemeral_range, port_for_later_bind


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_port_is_outside_the_ephemeral_range_and_free():
    low, high = ephemeral_range()
    ports = {port_for_later_bind("127.0.0.1") for _ in range(20)}
    assert all(not low <= port <= high for port in ports), (low, high, ports)
    assert all(_bindable(port) for port in ports)
    assert len(ports) > 1  # drawn at random: two workers started together do not pick the same one


def test_with_no_room_outside_the_range_the_kernel_picks_one():
    # the only span outside this "ephemeral range" is too small to search: a port from bind(0)
    port = port_for_later_bind("127.0.0.1", ephemeral=(1024, 65500))
    assert 1024 <= port <= 65535 and _bindable(port)


def test_an_unreadable_range_file_means_linuxs_default(tmp_path):
    assert ephemeral_range(str(tmp_path / "missing")) == (32768, 60999)
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ephemeral_range(str(tmp_path / "range")) == (40000, 50000)
