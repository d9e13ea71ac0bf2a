"""Live progress: counters every client process publishes, and a rich progress bar that reads them.

Each client process owns one slot of ``FIELDS`` numbers in a flat buffer (a list in-process, a shared
``multiprocessing.Array`` across processes): requests finished, errors, output tokens (server usage, else
content chunks). The bar polls the buffer four times a second on a thread of its own and shows requests
done, current request and output-token throughput, and errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import MutableSequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .records import RequestRecord

FIELDS = 3  # finished, errors, output tokens
POLL_S = 0.25


class Counters:
    """One client process's slot in the shared buffer."""

    def __init__(self, buffer: MutableSequence[float], worker: int = 0) -> None:
        self.buffer = buffer
        self.base = worker * FIELDS

    def add(self, record: RequestRecord) -> None:
        buffer, base = self.buffer, self.base
        buffer[base] += 1
        if not record.ok:
            buffer[base + 1] += 1
        tokens = record.usage_completion_tokens
        buffer[base + 2] += tokens if tokens is not None else len(record.chunk_ns)


def totals(buffer: MutableSequence[float]) -> tuple[int, int, int]:
    """(finished, errors, output tokens) summed over every slot."""
    values = list(buffer)
    return tuple(int(sum(values[i::FIELDS])) for i in range(FIELDS))  # type: ignore[return-value]


class LiveProgress:
    """A progress bar over a counter buffer (a context manager; silent when ``enabled`` is False)."""

    def __init__(self, buffer: MutableSequence[float], total: int | None, label: str, enabled: bool) -> None:
        self.buffer = buffer
        self.enabled = enabled
        self.total = total
        self.label = label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-progress", daemon=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False, refresh_per_second=4)
        self._task = self._progress.add_task(label, total=total, rates="")
        self._started = time.monotonic()

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self._started = time.monotonic()
            self._progress.start()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self._update()
            self._progress.stop()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self._update()

    def _update(self) -> None:
        finished, errors, tokens = totals(self.buffer)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rates = f"{finished / elapsed:7.1f} req/s {tokens / elapsed:9.1f} tok/s  errors {errors}"
        self._progress.update(self._task, completed=finished, rates=rates)
