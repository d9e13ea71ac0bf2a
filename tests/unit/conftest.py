"""Fixtures shared by the unit tests."""

from __future__ import annotations

import asyncio

import pytest
import uvloop


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Runs a coroutine on the standard loop and on uvloop (what the worker and gateway processes use)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run(coroutine):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coroutine)
    return run
