"""SSE granularity: one event per engine output, whatever the load; ``--stream-coalesce`` folds a backlog.

The client reads the first event, then stops reading for a while: the mock (no simulated delay) keeps generating,
so when the stream is read again many outputs are queued in the gateway at once. By default each still becomes
its own ``data:`` event (the mock emits one token per output and its corpus is ASCII, so every token is text);
with ``--stream-coalesce`` the queue goes out as fewer, larger events.
"""

from __future__ import annotations

import json
import time

import httpx
from e2e_support import MODEL

TOKENS = 600


def stream_events(base_url: str) -> tuple[list[str], int]:
    """(the content of each content event, completion tokens from usage), reading after a pause."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count the waves."}], "max_tokens": TOKENS,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    contents, usage, paused = [], None, False
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60.0) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    contents.append(choice["delta"]["content"])
            if not paused:
                paused = True
                time.sleep(0.5)  # the rest of the generation queues up meanwhile
    assert usage == TOKENS
    return contents, usage


def test_one_event_per_engine_output_even_when_behind(daemon, tok):
    contents, tokens = stream_events(daemon.base_url)
    assert len(contents) == tokens, f"{len(contents)} content events for {tokens} tokens"
    assert all(len(tok.encode(text, add_special_tokens=False).ids) <= 2 for text in contents)


def test_stream_coalesce_folds_what_queued(start_daemon):
    server = start_daemon("--stream-coalesce", mock_workers=1)
    contents, tokens = stream_events(server.base_url)
    # how much folds depends on how far the gateway's reader falls behind the mock (it got faster: at times only a
    # little over half); without the flag every token is its own event (the test above)
    assert len(contents) < tokens * 0.9, f"{len(contents)} content events for {tokens} tokens"
