"""Backpressure for slow readers (issue 13 item 4): clients that stop reading long streams.

A stalled stream holds a bounded amount in the HTTP process (``--max-stream-backlog-mb`` of unread SSE, at most
``--max-queued-tokens`` from the worker, which is paused), the stream resumes intact once the client reads, and
a client stalled past ``--slow-reader-timeout-s`` gets its request aborted with an error event in its API's
shape. The clients are raw sockets with a small receive buffer that read 8 KB and then nothing for a while.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from e2e_support import MODEL
from test_e2e_request_limits import descendants, rss_bytes

from frontend.transport.tcp_diag import open_tcp_diag

_diag = open_tcp_diag()
pytestmark = pytest.mark.skipif(_diag is None, reason="no sock_diag netlink socket: slow readers are not bounded here")
if _diag is not None:
    _diag.close()

TOKENS = 12_000
BIG_STREAM = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": TOKENS,
              "ignore_eos": True, "stream": True, "logprobs": True, "top_logprobs": 20,
              "stream_options": {"include_usage": True}}  # about 18 MB of SSE


def open_stalled(server, path: str, body: dict, headers: str = "") -> socket.socket:
    """POST ``body`` on a raw socket with a 4 KB receive buffer and read its first 8 KB, then nothing."""
    payload = json.dumps(body).encode()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.http_port))
    raw.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}"
                f"Connection: close\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    raw.settimeout(30)
    head = b""
    while len(head) < 8192:
        chunk = raw.recv(8192 - len(head))
        assert chunk, f"the response ended after {len(head)} bytes: {head[-300:]!r}"
        head += chunk
    return raw


def read_to_end(raw: socket.socket) -> str:
    chunks = []
    while chunk := raw.recv(1 << 20):
        chunks.append(chunk)
    raw.close()
    return b"".join(chunks).decode(errors="replace")


def stalls(server, outcome: str) -> float:
    prefix = f'dynamo_frontend_http_stream_stalls_total{{outcome="{outcome}"}} '
    return sum(float(line[len(prefix):]) for line in server.http.get("/metrics").text.splitlines()
               if line.startswith(prefix))


def http_process(server) -> int:
    pids = [pid for pid, name in descendants(server.pid).items() if name == "dyn-http"]
    assert len(pids) == 1, descendants(server.pid)
    return pids[0]


def test_stalled_streams_hold_a_bounded_amount_and_finish_intact_once_read(start_daemon):
    """Four 12,000-token streams with top_logprobs=20 (18 MB of SSE each) whose clients stop after 8 KB: the HTTP
    process grows by far less than what they would buffer (before backpressure: ~75 MB for two), and once the
    clients read, every stream carries all its tokens, its usage and [DONE]."""
    server = start_daemon("--max-stream-backlog-mb", "1", mock_workers=1)
    http_pid = http_process(server)
    warm = dict(BIG_STREAM, max_tokens=3000)  # the process's working set for such streams, before measuring
    read_to_end(open_stalled(server, "/v1/chat/completions", warm))
    before = rss_bytes(http_pid)
    clients = [open_stalled(server, "/v1/chat/completions", BIG_STREAM) for _ in range(4)]
    time.sleep(3)  # the mock (no simulated delay) would have generated everything by now
    grown = rss_bytes(http_pid) - before
    # measured 5-36 MiB (the tokens in flight when the worker is paused depend on how busy the process is);
    # without the bound 93-123 MiB
    assert grown < 56 << 20, f"dyn-http grew by {grown >> 20} MiB while 4 streams stalled"
    texts = [read_to_end(raw) for raw in clients]
    for text in texts:
        assert f'"completion_tokens":{TOKENS}' in text and "data: [DONE]" in text and 'data: {"error"' not in text
    assert stalls(server, "caught_up") >= 4


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_client_stalled_past_the_timeout_gets_the_request_aborted(start_daemon, tmp_path, path):
    """Past the timeout the stream ends with the API's own error event (OpenAI's error object; Anthropic's
    ``error`` event with ``timeout_error``) and the worker stops generating. Anthropic's API has no ignore_eos, so
    its long answer is a mock script's."""
    server = start_daemon("--max-stream-backlog-mb", "0.01", "--slow-reader-timeout-s", "1", mock_workers=0)
    script = tmp_path / "long.json"
    script.write_text(json.dumps([{"match": "", "output": " ab" * 8000}]))
    server.start_mocker("--script", str(script))
    server.wait_model(MODEL)
    body = BIG_STREAM
    if path == "/v1/messages":
        body = {"model": MODEL, "messages": BIG_STREAM["messages"], "max_tokens": TOKENS, "stream": True}
    raw = open_stalled(server, path, body)
    time.sleep(3)
    text = read_to_end(raw)
    assert "too slowly" in text and "timeout_error" in text, text[-500:]
    assert "event: error" in text if path == "/v1/messages" else 'data: {"error"' in text
    assert f'"completion_tokens":{TOKENS}' not in text and "message_stop" not in text
    assert stalls(server, "aborted") == 1
    metrics = server.http.get("/metrics").text  # the request ended (the worker was told to stop)
    assert f'dynamo_frontend_inflight_requests{{model="{MODEL}"}} 0' in metrics, metrics
