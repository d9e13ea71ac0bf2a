"""Daemon lifecycle: a killed built-in worker is replaced; SIGTERM stops the daemon and every child."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from e2e_support import MODEL, Daemon, wait_until


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` with its command line (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_builtin_worker_is_replaced(start_daemon):
    server: Daemon = start_daemon(mock_workers=1)
    before = {i["instance_id"] for i in server.http.get("/health").json()["instances"]}
    mockers = [pid for pid, cmd in descendants(server.pid).items() if "frontend.mocker" in cmd]
    assert len(mockers) == 1, descendants(server.pid)
    os.kill(mockers[0], signal.SIGKILL)

    def replaced() -> bool:
        instances = {i["instance_id"] for i in server.http.get("/health").json().get("instances", [])}
        return bool(instances) and not instances & before

    wait_until(replaced, 20.0, "a new mock worker instance to replace the killed one", interval=0.1,
               on_timeout=server.describe)
    with server.client() as sdk:
        response = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=3)
    assert response.usage.completion_tokens == 3
    new = [pid for pid, cmd in descendants(server.pid).items() if "frontend.mocker" in cmd]
    assert len(new) == 1 and new != mockers


def test_sigterm_stops_daemon_and_children(start_daemon):
    server: Daemon = start_daemon(mock_workers=2)
    children = descendants(server.pid)
    assert sum("frontend.mocker" in cmd for cmd in children.values()) == 2, children
    assert len(children) >= 5, children  # registry, tokenizer, 2 mock workers, HTTP worker
    server.process.send_signal(signal.SIGTERM)
    start = time.monotonic()
    code = server.process.wait(15)
    assert code == 0, (code, server.log_text())
    assert time.monotonic() - start < 12
    wait_until(lambda: not any(alive(pid) for pid in children), 5.0, "every child process to exit",
               on_timeout=lambda: str({pid: cmd for pid, cmd in children.items() if alive(pid)}))
    assert "Traceback" not in server.log_text(), server.log_text()
