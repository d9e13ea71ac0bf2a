"""``--io-thread-sched-batch`` (default on): at its first request an HTTP process puts Granian's threads under
SCHED_BATCH, so that a response write does not preempt the event loop; the event loop and ZeroMQ's I/O threads keep
the normal policy. Off, every thread keeps it. (Which threads exactly: tests/unit/test_process_helpers.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import MODEL
from test_e2e_request_limits import descendants


def thread_policies(server) -> dict[str, int]:
    """The scheduling policy of every thread of the daemon's one HTTP process, by ``main``, ``ZMQbg/...`` or the
    thread's name and id."""
    (http_pid,) = [pid for pid, name in descendants(server.pid).items() if name == "dyn-http"]
    policies = {}
    for task in Path(f"/proc/{http_pid}/task").iterdir():
        tid = int(task.name)
        name = (task / "comm").read_text().strip()
        key = "main" if tid == http_pid else name if name.startswith("ZMQbg/") else f"{name}:{tid}"
        policies[key] = os.sched_getscheduler(tid)
    return policies


@pytest.mark.parametrize("enabled", [True, False], ids=["default", "off"])
def test_granians_threads_run_as_batch_threads_after_the_first_request(start_daemon, enabled):
    probe = "import os; os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))"
    if subprocess.run([sys.executable, "-c", probe]).returncode != 0:
        pytest.skip("this machine does not allow SCHED_BATCH")
    server = start_daemon("--workers", "1", *(() if enabled else ("--no-io-thread-sched-batch",)), mock_workers=1)
    response = server.http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert response.status_code == 200
    policies = thread_policies(server)
    helpers = {key: policy for key, policy in policies.items() if key != "main" and not key.startswith("ZMQbg/")}
    assert helpers, policies  # Granian's runtime thread at least
    assert policies["main"] == os.SCHED_OTHER
    assert all(policy == os.SCHED_OTHER for key, policy in policies.items() if key.startswith("ZMQbg/"))
    batch = [key for key, policy in helpers.items() if policy == os.SCHED_BATCH]
    if enabled:  # the threads there at the first request (threads started later, e.g. a tokenizer's pool, are not)
        assert batch, sorted(policies.items())
    else:
        assert not batch, sorted(policies.items())
