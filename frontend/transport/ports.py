"""Choosing a TCP port now for a listener that another process binds later (vLLM's KV-event replay ROUTER, its
NIXL side channel).

A port that ``bind(port 0)`` hands out comes from the kernel's ephemeral range, which every outgoing connection on
the machine draws its local port from. Released and bound again seconds later (after a model has loaded), it can
meanwhile have become the local end of some connection, and the bind fails ("Address already in use"). So the port
is drawn at random from below the ephemeral range (or above it), where no connection takes ports by itself, and
checked free now.
"""

from __future__ import annotations

import random
import socket

EPHEMERAL_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST_PORT = 10_000  # below: well-known and often-configured service ports
ATTEMPTS = 64


def ephemeral_range(path: str = EPHEMERAL_RANGE_PATH) -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux's default where it cannot be read)."""
    try:
        with open(path) as handle:
            low, high = (int(part) for part in handle.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def port_for_later_bind(host: str, ephemeral: tuple[int, int] | None = None) -> int:
    """A TCP port free on ``host`` now and outside ``ephemeral`` (default: the kernel's range); a port from
    ``bind(0)`` when none is found there."""
    low, high = ephemeral or ephemeral_range()
    spans = [span for span in ((LOWEST_PORT, low - 1), (high + 1, 65535)) if span[1] - span[0] >= ATTEMPTS]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(ATTEMPTS if spans else 0):
        first, last = random.choice(spans)
        port = random.randint(first, last)
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:  # taken
                continue
        return port
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
