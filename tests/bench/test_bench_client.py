"""The HTTP client against ``bench.stub_server`` (20 ms TTFT, 5 ms between chunks), and the SSE parser."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import uvloop

from bench.client import Client, StreamState, on_event
from bench.config import ProfileConfig
from bench.records import RequestRecord


def new_record() -> RequestRecord:
    return RequestRecord(index=0, session=0, turn=0, conversation=0, start_ns=0, end_ns=0)


def send(url: str, body: dict, **fields) -> RequestRecord:
    config = ProfileConfig(url=url, model=body.get("model", "stub"), **fields)

    async def go() -> RequestRecord:
        async with Client(config, connections=2) as client:
            return await client.send(msgspec.json.encode(body), new_record())

    return uvloop.run(go())


def test_streamed_chat_is_timed_per_content_chunk(stub_url):
    body = {"model": "stub", "messages": [], "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    record = send(stub_url, body, streaming=True)
    assert record.ok and record.status == 200
    assert len(record.chunk_ns) == 6  # the finish-reason and usage events carry no text
    assert record.output_text == " tok" * 6 and record.usage_completion_tokens == 6
    # The stub waits 20 ms, then 5 ms between chunks; a busy machine may only add delay (or merge chunks).
    ttft_ms = (record.chunk_ns[0] - record.start_ns) / 1e6
    decode_ms = (record.chunk_ns[-1] - record.chunk_ns[0]) / 1e6
    assert 19 <= ttft_ms < 1000
    assert 5 * 5 - 1 <= decode_ms < 1000
    assert record.chunk_ns == sorted(record.chunk_ns) and record.end_ns >= record.chunk_ns[-1]


def test_streamed_completions(stub_url):
    record = send(stub_url, {"prompt": "x", "max_tokens": 3, "stream": True}, streaming=True,
                  endpoint_type="completions")
    assert record.ok and len(record.chunk_ns) == 3 and record.usage_completion_tokens is None


def test_unary_chat_and_embeddings(stub_url):
    record = send(stub_url, {"messages": [], "max_tokens": 4})
    assert record.ok and len(record.chunk_ns) == 1 and record.output_text == " tok" * 4
    assert record.usage_completion_tokens == 4
    embedding = send(stub_url, {"input": "hello"}, endpoint_type="embeddings")
    assert embedding.ok and len(embedding.chunk_ns) == 1 and embedding.usage_prompt_tokens == 1


def test_http_errors_and_in_band_stream_errors_are_typed(stub_url):
    overloaded = send(stub_url, {"model": "fail-503", "messages": [], "stream": True}, streaming=True)
    assert (overloaded.status, overloaded.error_type, overloaded.error_message) == (503, "http_503", "overloaded")
    broken = send(stub_url, {"model": "fail-stream", "messages": [], "max_tokens": 5, "stream": True},
                  streaming=True)
    assert broken.error_type == "stream_error" and broken.error_message == "engine died"
    refused = send("http://127.0.0.1:9", {"messages": []})
    assert refused.error_type == "ClientConnectorError" and refused.status == 0


def test_request_timeout_is_an_error(stub_url):
    record = send(stub_url, {"messages": [], "max_tokens": 50, "stream": True}, streaming=True, request_timeout=0.1)
    assert record.error_type == "timeout"


def test_cancelled_request_is_recorded_then_reraised(stub_url):
    config = ProfileConfig(url=stub_url, model="stub", streaming=True)
    record = new_record()

    async def go() -> None:
        async with Client(config) as client:
            task = asyncio.ensure_future(client.send(b'{"max_tokens": 100, "stream": true}', record))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    uvloop.run(go())
    assert record.error_type == "cancelled" and record.end_ns > record.start_ns


def test_sse_parser_handles_comments_multiline_data_and_reasoning():
    record, state = new_record(), StreamState()
    on_event(b": keep-alive", 1, record, state)
    on_event(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}', 2, record, state)
    on_event(b'data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}', 3, record, state)
    on_event(b'event: message\ndata: {"choices":[{"delta":\ndata: {"content":"Hi"}}]}', 4, record, state)
    on_event(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}', 5, record, state)
    on_event(b"data: [DONE]", 6, record, state)
    assert record.chunk_ns == [3, 4] and state.texts == ["hmm", "Hi"]
    assert (record.usage_prompt_tokens, record.usage_completion_tokens) == (3, 2) and record.ok
    on_event(b"data: {not json", 7, record, state)
    assert record.error_type == "invalid_json"
