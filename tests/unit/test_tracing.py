"""OpenTelemetry tracing (frontend.observability.tracing): off costs nothing, the client's traceparent is the parent,
the hooks' spans and attributes, the wire field to the worker, the exporter per protocol."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from frontend.observability import tracing
from frontend.observability.tracing import CURRENT_TRACE, Tracing, end_worker_span, env_enabled, start_tracing
from frontend.protocol import engine as wire
from frontend.protocol.engine import GenerateRequest, StopConditions
from frontend.protocol.errors import InvalidRequest, ServiceUnavailable

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


@dataclass
class FakeRoute:
    instance_id: str = "worker-1"
    overlap_blocks: int = 3
    prefill_tokens: int = 40


class FakeObserver:
    """A metrics observer that remembers its calls."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.counts: list[int] = []
        self.totals: tuple | None = None

    def tokens(self, count: int) -> None:
        self.counts.append(count)

    def finished(self, prompt_tokens: int, output_tokens: int, cached_tokens: int, *, cancelled: bool,
                 error: bool) -> None:
        self.totals = (prompt_tokens, output_tokens, cached_tokens, cancelled, error)


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    tracer = Tracing("test-frontend", exporter)
    yield tracer, exporter
    tracer.shutdown()


def finished_spans(tracer: Tracing, exporter: InMemorySpanExporter) -> dict:
    tracer.provider.force_flush()
    return {span.name: span for span in exporter.get_finished_spans()}


def engine_request() -> GenerateRequest:
    return GenerateRequest("r1", [1, 2, 3, 4], StopConditions(max_tokens=8), model="tiny")


@pytest.mark.parametrize("value,enabled", [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False),
                                           ("false", False), ("", False), ("no", False)])
def test_otel_export_enabled_values(value, enabled):
    assert env_enabled({"OTEL_EXPORT_ENABLED": value}) is enabled


def test_off_is_no_provider_and_no_current_trace():
    assert env_enabled({}) is False
    assert start_tracing(False) is None
    assert tracing.start_worker_tracing({}) is None
    assert CURRENT_TRACE.get() is None  # what every hook looks at: never set while tracing is off


def test_off_imports_no_opentelemetry():
    """The HTTP app, the gateway, the pipeline and the worker SDK load without the OpenTelemetry SDK while off."""
    code = ("import sys; import frontend.http.app, frontend.pipeline.generation, frontend.worker, "
            "frontend.daemon.supervisor; from frontend.observability.tracing import start_tracing; "
            "assert start_tracing(False) is None; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_root_span_is_the_child_of_the_client_traceparent(traced):
    tracer, exporter = traced
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=x", "x-other": "y"}
    with tracer.request("POST", "/v1/chat/completions", headers) as trace:
        assert CURRENT_TRACE.get() is trace
    assert CURRENT_TRACE.get() is None
    root = finished_spans(tracer, exporter)["http.request POST /v1/chat/completions"]
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert format(root.parent.span_id, "016x") == CLIENT_SPAN and root.parent.is_remote
    assert root.context.trace_state.get("vendor") == "x"
    assert root.kind == SpanKind.SERVER
    assert dict(root.attributes) == {"http.request.method": "POST", "http.route": "/v1/chat/completions",
                                     "http.response.status_code": 200}
    assert root.resource.attributes["service.name"] == "test-frontend"


def test_without_traceparent_the_root_starts_a_trace(traced):
    tracer, exporter = traced
    with tracer.request("POST", "/v1/completions", {"traceparent": "garbage"}):
        pass
    root = finished_spans(tracer, exporter)["http.request POST /v1/completions"]
    assert root.parent is None and root.context.trace_id != 0


def test_hooks_add_children_first_token_and_totals(traced):
    tracer, exporter = traced
    observer = FakeObserver()
    with tracer.request("POST", "/v1/chat/completions", {"traceparent": TRACEPARENT}) as trace:
        trace.tokenized(time.perf_counter() - 0.002, 4, True)
        sent = trace.routed(engine_request(), time.perf_counter(), "tiny", 16, FakeRoute())
        traced_observer = trace.observe(observer, "tiny")
        assert traced_observer.started == observer.started
        traced_observer.tokens(1)
        assert traced_observer.tokens == observer.tokens  # after the first token: the metrics observer's own
        traced_observer.tokens(2)
        traced_observer.finished(4, 3, 16, cancelled=False, error=False)
    assert observer.counts == [1, 2] and observer.totals == (4, 3, 16, False, False)
    spans = finished_spans(tracer, exporter)
    root, tokenize, route = spans["http.request POST /v1/chat/completions"], spans["tokenize"], spans["route"]
    for child in (tokenize, route):
        assert child.parent.span_id == root.context.span_id and child.context.trace_id == root.context.trace_id
    assert tokenize.end_time - tokenize.start_time >= 2_000_000
    assert dict(tokenize.attributes) == {"gen_ai.usage.input_tokens": 4, "dynamo.tokenize.inline": True}
    assert dict(route.attributes) == {"gen_ai.request.model": "tiny", "dynamo.worker.instance_id": "worker-1",
                                      "dynamo.router.overlap_blocks": 3, "dynamo.router.overlap_tokens": 48,
                                      "dynamo.router.prefill_tokens": 40}
    assert [event.name for event in root.events] == ["first_token"]
    assert {key: root.attributes[key] for key in ("gen_ai.request.model", "dynamo.worker.instance_id",
                                                  "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                                                  "dynamo.cached_tokens")} == {
        "gen_ai.request.model": "tiny", "dynamo.worker.instance_id": "worker-1", "gen_ai.usage.input_tokens": 4,
        "gen_ai.usage.output_tokens": 3, "dynamo.cached_tokens": 16}
    # the engine request carries the root span's context to the worker
    assert sent.trace_context == {"traceparent": f"00-{TRACE_ID}-{format(root.context.span_id, '016x')}-01"}


def test_first_token_event_once_per_request(traced):
    tracer, exporter = traced
    with tracer.request("POST", "/v1/completions", {}) as trace:
        first, second = trace.observe(FakeObserver(), "tiny"), trace.observe(FakeObserver(), "tiny")
        first.tokens(1)
        second.tokens(1)
    root = finished_spans(tracer, exporter)["http.request POST /v1/completions"]
    assert [event.name for event in root.events] == ["first_token"]


def test_unary_requests_are_sent_unchanged(traced):
    tracer, _ = traced
    embed = wire.EmbedRequest("e1", "tiny-embed", [[1, 2]])
    with tracer.request("POST", "/v1/embeddings", {}) as trace:
        assert trace.routed(embed, time.perf_counter(), "tiny-embed", 16, FakeRoute()) is embed


@pytest.mark.parametrize("error,status,failed", [(InvalidRequest("bad"), 400, False),
                                                 (ServiceUnavailable("busy"), 503, True)])
def test_request_error_status(traced, error, status, failed):
    tracer, exporter = traced
    with pytest.raises(type(error)), tracer.request("POST", "/v1/chat/completions", {}):
        raise error
    root = finished_spans(tracer, exporter)["http.request POST /v1/chat/completions"]
    assert root.attributes["http.response.status_code"] == status
    assert (root.status.status_code == StatusCode.ERROR) is failed


def test_bug_and_cancellation(traced):
    tracer, exporter = traced
    with pytest.raises(RuntimeError), tracer.request("POST", "/v1/a", {}):
        raise RuntimeError("bug")
    with pytest.raises(KeyboardInterrupt), tracer.request("POST", "/v1/b", {}):
        raise KeyboardInterrupt
    spans = finished_spans(tracer, exporter)
    bug, cancelled = spans["http.request POST /v1/a"], spans["http.request POST /v1/b"]
    assert bug.attributes["http.response.status_code"] == 500 and bug.attributes["error.type"] == "RuntimeError"
    assert "http.response.status_code" not in cancelled.attributes
    assert cancelled.attributes["error.type"] == "cancelled"


def test_cancelled_generation_marks_the_root(traced):
    tracer, exporter = traced
    with tracer.request("POST", "/v1/completions", {}) as trace:
        trace.observe(FakeObserver(), "tiny").finished(4, 0, 0, cancelled=True, error=False)
    root = finished_spans(tracer, exporter)["http.request POST /v1/completions"]
    assert root.attributes["error.type"] == "cancelled" and root.attributes["gen_ai.usage.output_tokens"] == 0


def test_worker_span_is_the_child_of_the_gateway_span(traced):
    tracer, exporter = traced
    gateway_span = "a3ce929d0e0e4736"
    request = msgspec.structs.replace(engine_request(),
                                      trace_context={"traceparent": f"00-{TRACE_ID}-{gateway_span}-01"})
    span = tracer.worker_span(request, "w-7")
    end_worker_span(span, "length")
    worker = finished_spans(tracer, exporter)["worker.generate"]
    assert format(worker.context.trace_id, "032x") == TRACE_ID
    assert format(worker.parent.span_id, "016x") == gateway_span
    assert dict(worker.attributes) == {"dynamo.request_id": "r1", "gen_ai.request.model": "tiny",
                                       "dynamo.worker.instance_id": "w-7", "gen_ai.usage.input_tokens": 4,
                                       "dynamo.finish_reason": "length"}


def test_trace_context_field_is_back_compatible():
    request = engine_request()
    old_bytes = wire.encoder.encode(request)
    assert b"trace_context" not in old_bytes  # off: the message is what it was
    assert wire.to_worker_decoder.decode(old_bytes) == request
    carried = msgspec.structs.replace(request, trace_context={"traceparent": TRACEPARENT})
    assert wire.to_worker_decoder.decode(wire.encoder.encode(carried)).trace_context == {"traceparent": TRACEPARENT}
    names = [field.name for field in msgspec.structs.fields(GenerateRequest)]
    assert names.index("trace_context") > names.index("model")  # appended


def test_service_name_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-gateway")
    tracer = Tracing("dynamo-frontend", InMemorySpanExporter())
    try:
        assert tracer.provider.resource.attributes["service.name"] == "my-gateway"
    finally:
        tracer.shutdown()


@pytest.mark.parametrize("env,module", [
    ({}, "grpc"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc"),
])
def test_exporter_per_protocol(monkeypatch, env, module):
    for name in tracing.PROTOCOL_ENVS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing._exporter_class().__module__.startswith(f"opentelemetry.exporter.otlp.proto.{module}.")
