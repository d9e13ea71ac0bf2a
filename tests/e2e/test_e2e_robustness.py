"""Bad input never hurts other requests: long streams in flight survive a burst of malformed requests."""

from __future__ import annotations

import asyncio
import json

import httpx
from e2e_support import MODEL

STREAMS = 4
TOKENS = 400
MESSAGES = [{"role": "user", "content": "Keep talking."}]

BURST: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}'),
    ("/v1/chat/completions", b"not json"),
    ("/v1/chat/completions", b""),
    ("/v1/chat/completions", b"\xff\xfe\xfd\x00\x01"),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "\xc3\x28"}'),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": "not a list"}).encode()),
    ("/v1/chat/completions", json.dumps({"model": 12, "messages": [{"role": "user", "content": 5}]}).encode()),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 10**30}).encode()),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": MESSAGES, "seed": 2**80}).encode()),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": MESSAGES, "temperature": -1}).encode()),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": MESSAGES, "top_logprobs": 10**9,
                                         "logprobs": True}).encode()),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": [2**70]}).encode()),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": [[1, 2], [10**7]]}).encode()),
    ("/v1/chat/completions", json.dumps({"model": "no-such-model", "messages": MESSAGES}).encode()),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": "x" * 200000, "max_tokens": 1}).encode()),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": MESSAGES, "n": 500}).encode()),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": MESSAGES, "guided_regex": "(",
                                         "nvext": {"annotations": 7}}).encode()),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [' + b"[" * 5000 + b"]" * 5000 + b"]}"),
]


async def raw_abuse(port: int) -> None:
    """HTTP-level garbage: a truncated body (the client goes away mid-upload) and a non-HTTP line."""
    for payload in (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"model\": \"tiny\"",
                    b"THIS IS NOT HTTP\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(1000), 0.3)
        except asyncio.TimeoutError:
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def run(daemon, slow_model: str) -> tuple[list, list, float]:
    started = asyncio.Event()
    first_chunks = 0

    async def stream(index: int) -> tuple[str, object, str | None, float]:
        nonlocal first_chunks
        async with daemon.async_client() as sdk:
            response = await sdk.chat.completions.create(
                model=slow_model, messages=MESSAGES, seed=index, max_tokens=TOKENS, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            text, usage, finish = [], None, None
            async for chunk in response:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.choices:
                    if chunk.choices[0].delta.content:
                        if not text:
                            first_chunks += 1
                            if first_chunks == STREAMS:
                                started.set()
                        text.append(chunk.choices[0].delta.content)
                    finish = chunk.choices[0].finish_reason or finish
            return "".join(text), usage, finish, asyncio.get_running_loop().time()

    async def burst() -> tuple[list, float]:
        await asyncio.wait_for(started.wait(), 30)
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=daemon.base_url, timeout=30) as http:
            results = await asyncio.gather(*(http.post(path, content=body,
                                                       headers={"content-type": "application/json"})
                                             for path, body in BURST * 2))
            await raw_abuse(daemon.http_port)
            more = await asyncio.gather(*(http.post(path, content=body) for path, body in BURST))
        return results + more, loop.time()

    outcome = await asyncio.gather(*(stream(i) for i in range(STREAMS)), burst())
    streams, (responses, burst_end) = outcome[:STREAMS], outcome[STREAMS]
    return list(streams), responses, burst_end


def test_bad_input_does_not_disturb_streams_in_flight(daemon, slow_model, client):
    streams, responses, burst_end = asyncio.run(run(daemon, slow_model))
    # the whole burst happened while every stream was still generating
    assert burst_end < min(end for *_, end in streams), (burst_end, [end for *_, end in streams])

    for response in responses:  # every bad request got an answer of its own, an OpenAI error
        assert response.status_code >= 400, response.text
        body = response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}, body

    for text, usage, finish, _ in streams:
        assert finish == "length"
        assert usage is not None and usage.completion_tokens == TOKENS
        assert len(text.split()) > TOKENS // 3, text[:200]

    # identical seeds give identical text: nothing was lost or mixed up between the concurrent streams
    for index, (text, *_) in enumerate(streams):
        again = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=index, max_tokens=TOKENS,
                                               extra_body={"ignore_eos": True})
        assert again.choices[0].message.content == text, index
    assert daemon.http.get("/health").status_code == 200
