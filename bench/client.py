"""The HTTP client: one pooled aiohttp session per client process, one ``RequestRecord`` per request.

Timing follows AIPerf: the clock starts just before the request is handed to the connection pool and each
SSE event is stamped when the bytes carrying it are read from the socket (events that arrive in one read
share a timestamp, as they reached the client together). A non-streamed response is stamped once, when its
body has been read.
"""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

import aiohttp
import msgspec

from .config import ProfileConfig
from .endpoints import Response, decode, error_text, text_of
from .records import RequestRecord

ERROR_BODY_LIMIT = 300


class StreamState:
    """What a streamed response has delivered so far."""

    def __init__(self) -> None:
        self.buffer = b""
        self.texts: list[str] = []


class Client:
    """Sends request bodies to one URL over a shared connection pool (use as an async context manager)."""

    def __init__(self, config: ProfileConfig, connections: int = 0) -> None:
        self.url = config.target
        self.streaming = config.streaming
        self.headers = {"Content-Type": "application/json", **config.headers}
        self.timeout = aiohttp.ClientTimeout(total=config.request_timeout)
        self.connections = connections  # 0 = no limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0, ttl_dns_cache=3600)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=False,
                                              skip_auto_headers=("User-Agent",), read_bufsize=1 << 16)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, body: bytes, record: RequestRecord) -> RequestRecord:
        """Send ``body`` and fill ``record`` (timestamps, text, usage, error); raises only when cancelled."""
        assert self._session is not None, "use the client as an async context manager"
        record.start_ns = perf_counter_ns()
        try:
            async with self._session.post(self.url, data=body, headers=self.headers) as response:
                record.status = response.status
                if response.status != 200:
                    await self._read_error(response, record)
                elif self.streaming:
                    await self._read_stream(response, record)
                else:
                    await self._read_body(response, record)
        except TimeoutError:
            fail(record, "timeout", f"no complete response within {self.timeout.total:g} s")
        except aiohttp.ClientError as exc:
            fail(record, type(exc).__name__, str(exc))
        except asyncio.CancelledError:
            fail(record, "cancelled", "cancelled at the end of the benchmark")
            record.end_ns = perf_counter_ns()
            raise
        record.end_ns = perf_counter_ns()
        return record

    async def _read_error(self, response: aiohttp.ClientResponse, record: RequestRecord) -> None:
        body = await response.read()
        try:
            message = error_text(decode(body))
        except msgspec.DecodeError:
            message = None
        fail(record, f"http_{response.status}", message or body[:ERROR_BODY_LIMIT].decode(errors="replace"))

    async def _read_body(self, response: aiohttp.ClientResponse, record: RequestRecord) -> None:
        body = await response.read()
        arrived = perf_counter_ns()
        try:
            decoded = decode(body)
        except msgspec.DecodeError as exc:
            fail(record, "invalid_json", str(exc))
            return
        if (message := error_text(decoded)) is not None:
            fail(record, "response_error", message)
            return
        record.chunk_ns = [arrived]
        record.output_text = text_of(decoded)
        take_usage(record, decoded)

    async def _read_stream(self, response: aiohttp.ClientResponse, record: RequestRecord) -> None:
        # Read to the end of the body even after [DONE] or an error, so the connection can be reused.
        state = StreamState()
        async for data in response.content.iter_any():
            arrived = perf_counter_ns()
            state.buffer = (state.buffer + data).replace(b"\r\n", b"\n")
            while (end := state.buffer.find(b"\n\n")) >= 0:
                event, state.buffer = state.buffer[:end], state.buffer[end + 2:]
                on_event(event, arrived, record, state)
        if state.buffer.strip():
            on_event(state.buffer, perf_counter_ns(), record, state)
        record.output_text = "".join(state.texts)
        if record.ok and not record.chunk_ns:
            fail(record, "empty_response", "the stream ended without any content")


def on_event(event: bytes, arrived: int, record: RequestRecord, state: StreamState) -> None:
    """Apply one SSE event to the record (ignored once the record has failed)."""
    if not record.ok:
        return
    data = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
    if not data or data == b"[DONE]":
        return  # comments, event names, keep-alives, the end marker
    try:
        decoded = decode(data)
    except msgspec.DecodeError as exc:
        fail(record, "invalid_json", f"{exc}: {data[:ERROR_BODY_LIMIT]!r}")
        return
    if (message := error_text(decoded)) is not None:
        fail(record, "stream_error", message)
        return
    if text := text_of(decoded):
        record.chunk_ns.append(arrived)
        state.texts.append(text)
    take_usage(record, decoded)


def take_usage(record: RequestRecord, response: Response) -> None:
    if response.usage is not None:
        record.usage_prompt_tokens = response.usage.prompt_tokens
        record.usage_completion_tokens = response.usage.completion_tokens


def fail(record: RequestRecord, error_type: str, message: str) -> None:
    """Mark the record failed (the first error wins)."""
    if record.error_type is None:
        record.error_type = error_type
        record.error_message = message
