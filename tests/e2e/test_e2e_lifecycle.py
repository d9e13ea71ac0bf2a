"""Daemon lifecycle: a killed built-in worker is replaced; SIGTERM stops the daemon and every child."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from e2e_support import MODEL, Daemon, sse_events, wait_until


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


def _comm(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def test_requests_waiting_on_a_killed_tokenizer_are_sent_again(start_daemon):
    """A tokenizer process dies with requests inside it: they are sent again (to its successor), not left to
    time out (30 s, then a 503)."""
    server = start_daemon("--mock-extra-models", "none", "--tokenize-inline-max-bytes", "0", mock_workers=1)
    [tokenizer] = [pid for pid in descendants(server.pid) if _comm(pid) == "dyn-tokenizer"]
    os.kill(tokenizer, signal.SIGSTOP)  # requests reach it and stay inside
    outcomes: list[object] = []

    def ask() -> None:
        try:
            outcomes.append(httpx.post(server.base_url + "/v1/chat/completions", timeout=20, json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code)
        except httpx.HTTPError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    os.kill(tokenizer, signal.SIGKILL)
    for thread in threads:
        thread.join(30)
    assert outcomes == [200] * 4, (outcomes, server.log_text())


def test_short_prompts_are_tokenized_in_the_http_process(start_daemon, tok):
    """With the pool stopped, a short request is still answered (tokenized in the HTTP process, with the same
    ids as the pool's); a request above --tokenize-inline-max-bytes waits for the pool."""
    server = start_daemon("--mock-extra-models", "none", "--tokenize-inline-max-bytes", "2048", mock_workers=1)
    messages = [{"role": "user", "content": "A short question about lighthouses?"}]

    def prompt_tokens(content_messages: list[dict], timeout: float) -> int:
        response = httpx.post(server.base_url + "/v1/chat/completions", timeout=timeout, json={
            "model": MODEL, "messages": content_messages, "max_tokens": 1})
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens"]

    from_pool = prompt_tokens(messages, 10)  # the first sight of the model: the pool answers, this process loads it
    [tokenizer] = [pid for pid in descendants(server.pid) if _comm(pid) == "dyn-tokenizer"]
    time.sleep(1.0)  # the background load of the tokenizer in the HTTP process
    os.kill(tokenizer, signal.SIGSTOP)
    try:
        assert prompt_tokens(messages, 5) == from_pool
        long_messages = [{"role": "user", "content": "lighthouse " * 300}]
        with pytest.raises(httpx.ReadTimeout):
            prompt_tokens(long_messages, 1.5)
    finally:
        os.kill(tokenizer, signal.SIGCONT)
    rendered = tok.encode("lighthouse " * 300, add_special_tokens=False).ids
    assert prompt_tokens(long_messages, 10) > len(rendered)


def test_a_registry_restart_fails_no_request(start_daemon):
    """The registry dies mid-stream and is restarted: the stream finishes, and requests sent meanwhile are
    served from the gateways' last instance table while the workers register again."""
    server = start_daemon("--mock-extra-models", "none", "--mock-speedup-ratio", "1", mock_workers=2)
    [registry] = [pid for pid in descendants(server.pid) if _comm(pid) == "dyn-registry"]
    started, lines = threading.Event(), []

    def stream() -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 300,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                lines.append(line)
                started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(30)
    os.kill(registry, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 4.0  # through the restart and the re-registration (lease 2 s)
    while time.monotonic() < deadline:
        statuses.append(server.http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code)
        time.sleep(0.1)
    reader.join(60)
    assert set(statuses) == {200}, statuses
    events, done = sse_events(lines)
    assert done and not [e for e in events if "error" in e] and events[-1]["usage"]["completion_tokens"] == 300
    assert [pid for pid in descendants(server.pid) if _comm(pid) == "dyn-registry"] != [registry]
    assert len(server.http.get("/health").json()["instances"]) == 2


def test_an_indexer_restart_fails_no_request(start_daemon):
    """The indexer (the KV index's writer) dies: its successor adopts the shared segment the gateways mapped,
    requests are served throughout, and it gets back the blocks stored meanwhile from the workers' replay
    buffers, with no further request (no next event) needed."""
    server = start_daemon("--mock-extra-models", "none", "--router-mode", "kv", mock_workers=2)
    [indexer] = [pid for pid in descendants(server.pid) if _comm(pid) == "dyn-indexer"]
    os.kill(indexer, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        statuses.append(server.http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "The same long prefix, again and again."}],
            "max_tokens": 2}).status_code)
        time.sleep(0.1)
    assert set(statuses) == {200}, (statuses, server.log_text())
    def restarted() -> bool:
        return [pid for pid in descendants(server.pid) if _comm(pid) == "dyn-indexer"] not in ([], [indexer])

    wait_until(restarted, 10.0, "the indexer to be restarted")
    assert server.alive()
    wait_until(lambda: server.http.get("/health").json()["kv_index"]["live_blocks"] > 0, 10.0,
               "the restarted indexer to index the workers' blocks again")
