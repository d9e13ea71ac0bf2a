"""Helpers of the unit tests that run an event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Callable



async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` on the running loop until it is truthy (fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)

