"""The backlog of a streamed response (frontend/http/client_backlog.py) against a kernel played by the test: the
kernel is first asked at the first check, whose answer is the baseline; a stream that never gets there never asks."""

from __future__ import annotations

from frontend.config.sections import LimitsConfig
from frontend.http.client_backlog import ClientBacklog
from frontend.observability.metrics import Metrics
from frontend.transport.tcp_diag import TcpConnection

CONNECTION = TcpConnection(2, b"\x7f\x00\x00\x01", 8000, b"\x7f\x00\x00\x01", 50000)


class Kernel:
    """A ``TcpDiag``: the connection's acknowledged bytes, as the test sets them; counts the questions."""

    def __init__(self, known: bool = True) -> None:
        self.known = known
        self.acked: int | None = 1000  # an earlier response on the connection
        self.questions = 0

    def connection(self, server: str, client: str) -> TcpConnection | None:
        return CONNECTION if self.known else None

    def bytes_acked(self, connection: TcpConnection) -> int | None:
        self.questions += 1
        return self.acked


def _backlog(kernel: Kernel) -> ClientBacklog:
    backlog = ClientBacklog.watch(kernel, "127.0.0.1:8000", "127.0.0.1:50000", LimitsConfig(), Metrics())
    assert backlog is not None
    return backlog


def test_the_kernel_is_not_asked_before_the_first_check():
    kernel = Kernel()
    _backlog(kernel)
    assert kernel.questions == 0


def test_the_first_check_is_the_baseline_and_later_ones_count_from_it():
    kernel = Kernel()
    backlog = _backlog(kernel)
    first = backlog.check_every
    assert backlog.unacknowledged(first) == 0
    kernel.acked = 1000 + 100_000  # the client acknowledged 100 KB more since
    assert backlog.unacknowledged(first + 300_000) == 200_000
    kernel.acked = None  # the connection is gone
    assert backlog.unacknowledged(first + 400_000) is None


def test_a_connection_the_kernel_does_not_know_is_not_bounded():
    for kernel in (Kernel(known=False), Kernel()):
        kernel.acked = None if kernel.known else kernel.acked
        backlog = _backlog(kernel)
        assert backlog.unacknowledged(backlog.check_every) == 0
        kernel.acked = 0
        assert backlog.unacknowledged(100 * backlog.check_every) == 0
