"""A minimal OpenAI-compatible server that answers at once, to measure the client itself (and to test it).

``python -m bench.stub_server --port 9100 [--itl-ms 0] [--ttft-ms 0]`` serves ``/v1/chat/completions``,
``/v1/completions`` (unary or SSE, one token per chunk, ``max_tokens`` chunks, default 16, usage when
``stream_options.include_usage``), ``/v1/embeddings`` and ``/v1/models`` on 127.0.0.1. Every token is the
word ``" tok"``. Two model names fail on purpose, for testing error accounting: ``fail-503`` gets an HTTP
503 with an OpenAI error body and ``fail-stream`` an in-band ``{"error": ...}`` event after one chunk.
"""

from __future__ import annotations

import argparse
import asyncio

import msgspec
import uvloop
from aiohttp import web

DEFAULT_TOKENS = 16
TOKEN = " tok"


class StubRequest(msgspec.Struct):
    model: str = "stub"
    max_tokens: int | None = None
    stream: bool = False
    stream_options: dict[str, bool] | None = None


def chunk(kind: str, text: str | None, finish: str | None = None) -> dict[str, object]:
    if kind == "chat":
        delta = {} if text is None else {"content": text}
        return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return {"object": "text_completion", "choices": [{"index": 0, "text": text or "", "finish_reason": finish}]}


def event(payload: dict[str, object]) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


class Stub:
    """Request handlers with fixed timing: TTFT and the gap between token chunks."""

    def __init__(self, ttft_ms: float = 0.0, itl_ms: float = 0.0) -> None:
        self.ttft_s = ttft_ms / 1000
        self.itl_s = itl_ms / 1000

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", lambda request: self.generate(request, "chat"))
        app.router.add_post("/v1/completions", lambda request: self.generate(request, "completions"))
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def embeddings(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"object": "list", "data": [{"object": "embedding", "index": 0,
                                                              "embedding": [0.0] * 8}],
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    async def generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        body = msgspec.json.decode(await request.read(), type=StubRequest)
        if body.model == "fail-503":
            return web.json_response({"error": {"message": "overloaded", "type": "service_unavailable",
                                                "param": None, "code": 503}}, status=503)
        tokens = body.max_tokens or DEFAULT_TOKENS
        usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
        if not body.stream:
            await asyncio.sleep(self.ttft_s + self.itl_s * (tokens - 1))
            choice = ({"message": {"role": "assistant", "content": TOKEN * tokens}} if kind == "chat"
                      else {"text": TOKEN * tokens})
            return web.json_response({"choices": [{"index": 0, "finish_reason": "length", **choice}], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await self.stream_tokens(response, kind, tokens, failing=body.model == "fail-stream")
        if body.stream_options and body.stream_options.get("include_usage"):
            await response.write(event({"choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def stream_tokens(self, response: web.StreamResponse, kind: str, tokens: int, failing: bool) -> None:
        await asyncio.sleep(self.ttft_s)
        for index in range(tokens):
            if index:
                await asyncio.sleep(self.itl_s)
            await response.write(event(chunk(kind, TOKEN)))
            if failing:
                await response.write(event({"error": {"message": "engine died", "type": "internal_error"}}))
                return
        await response.write(event(chunk(kind, None, finish="length")))


async def serve(port: int, stub: Stub) -> None:
    runner = web.AppRunner(stub.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"stub server on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stub_server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.port, Stub(args.ttft_ms, args.itl_ms)))


if __name__ == "__main__":
    main()
