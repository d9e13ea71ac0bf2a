"""The worker's own status endpoint (frontend/worker/status_server.py): real sockets, raw HTTP."""

from __future__ import annotations

import asyncio

import pytest

from frontend.worker.status_server import MetricRow, PromptTokenSources, StatusServer, render_metrics


def test_metrics_render_help_and_type_once_and_escape_labels():
    rows = [MetricRow("x_total", "Xs.", "counter", (("a", 'q"\\\n'),), 3),
            MetricRow("x_total", "Xs.", "counter", (("a", "b"),), 1.5), MetricRow("g", "A gauge.", "gauge", (), 0)]
    assert render_metrics(rows).decode().splitlines() == [
        "# HELP x_total Xs.", "# TYPE x_total counter", 'x_total{a="q\\"\\\\\\n"} 3', 'x_total{a="b"} 1.5',
        "# HELP g A gauge.", "# TYPE g gauge", "g 0"]


def test_prompt_token_sources_rows():
    sources = PromptTokenSources()
    sources.local_compute, sources.external_kv_transfer, sources.kv_transfers = 5, 40, 2
    rows = {(row.name, dict(row.labels).get("source")): row.value for row in sources.rows((("worker_id", "w"),))}
    assert rows == {("worker_prompt_tokens_total", "local_compute"): 5,
                    ("worker_prompt_tokens_total", "local_cache_hit"): 0,
                    ("worker_prompt_tokens_total", "external_kv_transfer"): 40,
                    ("worker_kv_transfers_total", None): 2}


async def _ask(port: int, raw: bytes) -> bytes:
    """The whole answer to ``raw`` (nothing when the server closed the connection without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:  # closed with our bytes unread
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize("raw, status", [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"200 OK"),
    (b"GET /health?x=1 HTTP/1.1\r\n\r\n", b"200 OK"),
    (b"GET /other HTTP/1.1\r\n\r\n", b"404 Not Found"),
    (b"POST /metrics HTTP/1.1\r\n\r\n", b"405 Method Not Allowed"),
    (b"garbage\r\n\r\n", b"404 Not Found"),
])
def test_the_server_answers_metrics_and_health_only(raw, status):
    async def run() -> bytes:
        server = StatusServer("127.0.0.1", 0, lambda: [MetricRow("up", "Up.", "gauge", (), 1)],
                              lambda: {"status": "ready"})
        await server.start()
        try:
            return await _ask(server.port, raw)
        finally:
            server.close()

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 " + status)
    if raw.startswith(b"GET /metrics"):
        assert answer.endswith(b"\r\n\r\n# HELP up Up.\n# TYPE up gauge\nup 1\n")
    if raw.startswith(b"GET /health"):
        assert answer.endswith(b'{"status": "ready"}')


def test_an_oversized_request_head_is_dropped():
    async def run() -> bytes:
        server = StatusServer("127.0.0.1", 0, list, dict)
        await server.start()
        try:
            return await _ask(server.port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
        finally:
            server.close()

    assert asyncio.run(run()) == b""
