"""OpenTelemetry traces end to end: a daemon with OTEL_EXPORT_ENABLED=1 exports over OTLP/HTTP to a receiver in
the test; a request's spans (the HTTP process's root, tokenize, route; the mock worker's worker.generate) form
one trace under the client's traceparent; spans still queued are flushed at shutdown; off, nothing is sent."""

from __future__ import annotations

import gzip
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from e2e_support import MODEL, wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

ROOT = "http.request POST /v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Tell me a story about tracing."}]


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[str] = field(default_factory=list)


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


class OtlpReceiver:
    """An OTLP/HTTP (http/protobuf) trace receiver on 127.0.0.1: keeps every span POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.posts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(self.path, body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def add(self, path: str, body: bytes) -> None:
        assert path == "/v1/traces", path
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        resource["service.name"], span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), {kv.key: _value(kv.value) for kv in span.attributes},
                        [event.name for event in span.events]))
        with self.lock:
            self.posts += 1
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> dict[str, ReceivedSpan]:
        with self.lock:
            return {span.name: span for span in self.spans if span.trace_id == trace_id}

    def names(self, trace_id: str) -> list[str]:
        """The names of a trace's spans, sorted (with repeats)."""
        with self.lock:
            return sorted(span.name for span in self.spans if span.trace_id == trace_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = OtlpReceiver()
    yield server
    server.close()


def otel_env(receiver: OtlpReceiver, enabled: str = "1", delay_ms: str = "200") -> dict[str, str]:
    return {"OTEL_EXPORT_ENABLED": enabled, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": delay_ms}


def client_traceparent() -> tuple[str, str, str]:
    """(traceparent, trace id, span id) of a sampled client span."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def streamed_usage(daemon, traceparent: str) -> dict:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 12, "stream": True,
            "stream_options": {"include_usage": True}}
    usage = None
    with daemon.http.stream("POST", "/v1/chat/completions", json=body, headers={"traceparent": traceparent}) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                usage = orjson.loads(line[6:]).get("usage") or usage
    assert usage is not None
    return usage


def unary_usage(daemon, traceparent: str) -> dict:
    reply = daemon.http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 9},
                             headers={"traceparent": traceparent})
    assert reply.status_code == 200, reply.text
    return reply.json()["usage"]


def complete(receiver: OtlpReceiver, trace_id: str) -> dict[str, ReceivedSpan] | None:
    spans = receiver.trace(trace_id)
    return spans if {ROOT, "tokenize", "route", "worker.generate"} <= set(spans) else None


def check_trace(spans: dict[str, ReceivedSpan], client_span: str, usage: dict, instances: set[str]) -> None:
    root, tokenize, route, worker = spans[ROOT], spans["tokenize"], spans["route"], spans["worker.generate"]
    assert root.parent_span_id == client_span  # the client's span is the parent of the request's
    assert root.service == tokenize.service == route.service == "dynamo-frontend"
    assert tokenize.parent_span_id == route.parent_span_id == root.span_id
    assert worker.service == "dynamo-worker" and worker.parent_span_id == root.span_id
    worker_id = root.attributes["dynamo.worker.instance_id"]
    assert worker_id in instances
    assert route.attributes["dynamo.worker.instance_id"] == worker.attributes["dynamo.worker.instance_id"] == worker_id
    assert root.attributes["http.request.method"] == "POST"
    assert root.attributes["http.route"] == "/v1/chat/completions"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["gen_ai.request.model"] == route.attributes["gen_ai.request.model"] == MODEL
    assert root.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert tokenize.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert worker.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert root.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert root.attributes["dynamo.cached_tokens"] >= 0
    assert "dynamo.router.overlap_blocks" in route.attributes
    assert root.events == ["first_token"]
    assert worker.attributes["dynamo.finish_reason"] in ("length", "stop")


def test_one_trace_per_request_under_the_client_traceparent(start_daemon, receiver):
    daemon = start_daemon(mock_workers=1, env=otel_env(receiver))
    instances = {instance["instance_id"] for instance in daemon.http.get("/health").json()["instances"]}
    streamed_parent, streamed_trace, streamed_span = client_traceparent()
    unary_parent, unary_trace, unary_span = client_traceparent()
    usages = {streamed_trace: streamed_usage(daemon, streamed_parent), unary_trace: unary_usage(daemon, unary_parent)}
    for trace_id, client_span in ((streamed_trace, streamed_span), (unary_trace, unary_span)):
        spans = wait_until(lambda trace_id=trace_id: complete(receiver, trace_id), 20.0,
                           f"the spans of trace {trace_id}")
        check_trace(spans, client_span, usages[trace_id], instances)


def test_choices_share_the_request_trace(start_daemon, receiver):
    # the flag wins over the env var, and the daemon turns tracing on in the mock workers it starts
    daemon = start_daemon("--otel-export-enabled", mock_workers=1, env=otel_env(receiver, enabled="0"))
    parent, trace_id, _ = client_traceparent()
    reply = daemon.http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 5,
                                                           "n": 2, "seed": 1}, headers={"traceparent": parent})
    usage = reply.json()["usage"]
    expected = sorted([ROOT, "tokenize", "route", "route", "worker.generate", "worker.generate"])
    wait_until(lambda: receiver.names(trace_id) == expected, 20.0, f"the spans of trace {trace_id}",
               on_timeout=lambda: str(receiver.names(trace_id)))
    root = receiver.trace(trace_id)[ROOT]
    assert root.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 10  # both choices
    assert root.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]


def test_spans_still_queued_are_flushed_at_shutdown(start_daemon, receiver):
    daemon = start_daemon(mock_workers=1, env=otel_env(receiver, delay_ms="600000"))
    parent, trace_id, _ = client_traceparent()
    unary_usage(daemon, parent)
    assert receiver.trace(trace_id) == {}  # queued: the exporters wait 10 minutes between batches
    daemon.close()
    assert complete(receiver, trace_id) is not None


def test_nothing_is_exported_while_tracing_is_off(start_daemon, receiver):
    daemon = start_daemon(mock_workers=1, env=otel_env(receiver, enabled="0"))
    parent, _, _ = client_traceparent()
    unary_usage(daemon, parent)
    streamed_usage(daemon, parent)
    daemon.close()  # a daemon that traced would flush its spans now
    assert receiver.posts == 0 and receiver.spans == []
