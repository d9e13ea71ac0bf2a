"""Fixtures of the end-to-end suite: real daemons and workers, started as few times as possible.

* ``daemon`` (session): the shared daemon with 2 built-in mock workers (no simulated delay) serving ``tiny``,
  and one each serving ``tiny-embed``, ``tiny-image`` and ``tiny-video`` (``--mock-extra-models``).
* ``slow_model`` (session): an external mock worker on the shared daemon, realistic timing (~6 ms per
  token), serving the same model files as ``tiny-slow``; for tests that need requests to stay in flight.
* ``start_daemon``: a factory for short-lived daemons with special flags, closed after the test.
"""

from __future__ import annotations

import pytest
from e2e_support import EXTRA_MODELS, FAST, TINY_DIR, Daemon
from tokenizers import Tokenizer

SLOW_MODEL = "tiny-slow"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def daemon():
    server = Daemon(mock_workers=2, speedup=FAST, extra_models=tuple(EXTRA_MODELS))
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def client(daemon):
    with daemon.client() as sdk:
        yield sdk


@pytest.fixture(scope="session")
def slow_model(daemon):
    """A realistic-speed worker registered with the shared daemon; returns its model name."""
    daemon.start_mocker("--model-name", SLOW_MODEL, speedup="1")
    daemon.wait_model(SLOW_MODEL)
    return SLOW_MODEL


@pytest.fixture(scope="session")
def tok():
    return Tokenizer.from_file(str(TINY_DIR / "tokenizer.json"))


@pytest.fixture
def start_daemon():
    started: list[Daemon] = []

    def start(*extra: str, **kwargs) -> Daemon:
        server = Daemon(*extra, **kwargs)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.close()
