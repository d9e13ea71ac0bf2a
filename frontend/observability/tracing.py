"""OpenTelemetry traces of requests: off by default, and then nothing is imported and nothing done per request.

On with ``--otel-export-enabled`` (env ``DYN_OTEL_EXPORT_ENABLED`` or Dynamo's ``OTEL_EXPORT_ENABLED``) in the
frontend, and with ``OTEL_EXPORT_ENABLED`` in a worker process (the worker SDK reads it; the daemon sets it for
the mock workers it starts). The rest is the OpenTelemetry SDK's standard variables, read by the SDK itself:
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``
(``grpc``, the default, or ``http/protobuf``), ``OTEL_SERVICE_NAME`` (default ``dynamo-frontend``, a worker's
``dynamo-worker``), ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``.

One trace per HTTP request (POST routes): the root span ``http.request METHOD ROUTE`` is the child of the client's
W3C ``traceparent`` / ``tracestate``; its children are ``tokenize`` (``TokenizerClient.tokenize``) and ``route``
(``Gateway.submit``, one per engine request, also after a migration); the first token is an event of the root,
which ends when the response does (the last byte of a stream) with the model, worker and token counts. The
root's context travels to the worker in ``GenerateRequest.trace_context``, where the SDK opens
``worker.generate`` (:meth:`Tracing.worker_span`).

The hooks find the request's trace in :data:`CURRENT_TRACE` (one ``ContextVar.get`` per hook, None while off)
and never run per token: the first token rebinds :attr:`TracedObserver.tokens` to the metrics observer's own.
Spans are exported by the SDK's ``BatchSpanProcessor`` thread (the event loop only queues them);
:meth:`Tracing.shutdown` flushes them when the process exits.
"""

from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

import msgspec

from ..protocol.engine import GenerateRequest, UnaryRequest
from ..protocol.errors import RequestError
from .logs import REQUEST_ID as CURRENT_REQUEST_ID

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

ENABLED_ENV = "OTEL_EXPORT_ENABLED"  # Dynamo's switch; the frontend's option reads it as an env alias
TRUE_VALUES = ("1", "true", "yes", "on")
FRONTEND_SERVICE = "dynamo-frontend"
WORKER_SERVICE = "dynamo-worker"
PROTOCOL_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
EXPORTERS = {"grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
             "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter"}

# span attributes (README "Tracing")
MODEL = "gen_ai.request.model"
PROMPT_TOKENS = "gen_ai.usage.input_tokens"
COMPLETION_TOKENS = "gen_ai.usage.output_tokens"
CACHED_TOKENS = "dynamo.cached_tokens"
WORKER = "dynamo.worker.instance_id"
REQUEST_ID = "dynamo.request_id"
FINISH_REASON = "dynamo.finish_reason"


def env_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``OTEL_EXPORT_ENABLED`` turns export on (1, true, yes, on; any case)."""
    return environ.get(ENABLED_ENV, "").strip().lower() in TRUE_VALUES


def start_tracing(enabled: bool, service_name: str = FRONTEND_SERVICE) -> Tracing | None:
    """This process's tracing when ``enabled`` (the SDK configured from the ``OTEL_*`` variables), else None."""
    return Tracing(service_name) if enabled else None


def start_worker_tracing(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """A worker process's tracing: on with ``OTEL_EXPORT_ENABLED`` where the SDK is installed (else a warning)."""
    if not env_enabled(environ):
        return None
    problem = sdk_missing()
    if problem is not None:
        log.warning("tracing stays off", extra={"reason": problem})
        return None
    return Tracing(WORKER_SERVICE)


def sdk_missing() -> str | None:
    """Why tracing cannot be turned on here (the OpenTelemetry SDK or exporter is not installed), else None."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
        _exporter_class()
    except ImportError as exc:
        return f"tracing needs the OpenTelemetry SDK and OTLP exporter (pip install '.[tracing]'): {exc}"
    return None


class Tracing:
    """One process's tracer provider, batch exporter and propagator."""

    __slots__ = ("provider", "tracer", "_fields")

    def __init__(self, service_name: str, exporter: SpanExporter | None = None) -> None:
        """``exporter``: the OTLP exporter of the environment's protocol unless one is given (tests)."""
        from opentelemetry import propagate
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service_name}))
        self.provider: TracerProvider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER
        self.provider.add_span_processor(BatchSpanProcessor(exporter or _exporter_class()()))  # OTEL_BSP_*
        self.tracer: Tracer = self.provider.get_tracer("dynamo-py-frontend")
        self._fields = sorted(propagate.get_global_textmap().fields)  # the headers the propagators read

    def request(self, method: str, route: str, headers: Any) -> RequestTrace:
        """The trace of one HTTP request, child of the client's ``traceparent`` (``headers``: ``.get(name)``);
        use it as a context manager around the request."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        carrier = {name: value for name in self._fields if (value := headers.get(name)) is not None}
        parent = propagate.extract(carrier) if carrier else None
        root = self.tracer.start_span(f"http.request {method} {route}", parent, SpanKind.SERVER,
                                      {"http.request.method": method, "http.route": route})
        return RequestTrace(self.tracer, root)

    def worker_span(self, request: GenerateRequest, instance_id: str) -> Span:
        """``worker.generate``: a worker's span of one engine request, child of the gateway's request span
        (``request.trace_context``); end it with :func:`end_worker_span`."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        return self.tracer.start_span(  # type: ignore[return-value]
            "worker.generate", propagate.extract(request.trace_context or {}), SpanKind.SERVER,
            {REQUEST_ID: request.request_id, MODEL: request.model, WORKER: instance_id,
             PROMPT_TOKENS: len(request.token_ids)})

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter thread (the process is exiting)."""
        self.provider.shutdown()


def end_worker_span(span: Span, finish_reason: str) -> None:
    """End a :meth:`Tracing.worker_span` with the request's finish reason (``aborted`` when it was aborted)."""
    span.set_attribute(FINISH_REASON, finish_reason)
    span.end()


def _exporter_class() -> Callable[[], SpanExporter]:
    """The OTLP span exporter of ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` (grpc by default, or http/protobuf); it
    reads its endpoint, headers, timeout and compression from the environment itself."""
    import importlib

    protocol = next((os.environ[name] for name in PROTOCOL_ENVS if os.environ.get(name)), "grpc").strip().lower()
    if protocol not in EXPORTERS:
        log.warning("unsupported OTLP protocol, using grpc", extra={"protocol": protocol})
        protocol = "grpc"
    return importlib.import_module(EXPORTERS[protocol]).OTLPSpanExporter


class RequestTrace:
    """One HTTP request's root span and what the hooks add to it; current (:data:`CURRENT_TRACE`) inside its
    ``with`` block, which ends the root with the response's status."""

    __slots__ = ("tracer", "root", "_context", "_carrier", "_token", "_first_token")

    def __init__(self, tracer: Tracer, root: Span) -> None:
        self.tracer = tracer
        self.root = root
        self._context: Context | None = None
        self._carrier: dict[str, str] | None = None
        self._token: Token | None = None
        self._first_token = False

    def __enter__(self) -> RequestTrace:
        self._token = CURRENT_TRACE.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        if self._token is not None:
            CURRENT_TRACE.reset(self._token)
        if exc is None or isinstance(exc, RequestError):  # a RequestError is answered in its status
            self.end(200 if exc is None else exc.status)
        elif isinstance(exc, Exception):  # a bug: answered 500
            self.end(500, type(exc).__qualname__)
        else:  # cancelled: nothing answered
            self.end(None, "cancelled")

    def end(self, status: int | None, error_type: str | None = None) -> None:
        """End the root span with the HTTP status, if one was sent (an error from 500 on, as for any server
        span)."""
        from opentelemetry.trace import StatusCode

        root = self.root
        if status is not None:
            root.set_attribute("http.response.status_code", status)
        request_id = CURRENT_REQUEST_ID.get()
        if request_id is not None:
            root.set_attribute(REQUEST_ID, request_id)
        if error_type is not None:
            root.set_attribute("error.type", error_type)
        if status is not None and status >= 500:
            root.set_status(StatusCode.ERROR)
        root.end()

    def _child_context(self) -> Context:
        """The context whose current span is the root (the parent of the children), made once."""
        if self._context is None:
            from opentelemetry.trace import set_span_in_context

            self._context = set_span_in_context(self.root)
        return self._context

    def span_since(self, name: str, started: float, attributes: dict[str, Any]) -> None:
        """A child span that began at ``started`` (``time.perf_counter()``) and ends now."""
        now_ns = time.time_ns()
        start_ns = now_ns - int((time.perf_counter() - started) * 1e9)
        self.tracer.start_span(name, self._child_context(), attributes=attributes, start_time=start_ns).end(now_ns)

    def tokenized(self, started: float, prompt_tokens: int, inline: bool) -> None:
        """The ``tokenize`` span: the prompt was tokenized (in this process when ``inline``) since ``started``."""
        self.span_since("tokenize", started, {PROMPT_TOKENS: prompt_tokens, "dynamo.tokenize.inline": inline})

    def routed(self, request: GenerateRequest | UnaryRequest, started: float, model: str, block_size: int,
               route: RouteLike) -> GenerateRequest | UnaryRequest:
        """The ``route`` span (since ``started``) of an engine request sent to ``route.instance_id``; returns the
        request to send: a ``GenerateRequest`` carries the root span's context to the worker."""
        self.root.set_attribute(MODEL, model)
        self.root.set_attribute(WORKER, route.instance_id)
        self.span_since("route", started, {
            MODEL: model, WORKER: route.instance_id, "dynamo.router.overlap_blocks": route.overlap_blocks,
            "dynamo.router.overlap_tokens": route.overlap_blocks * block_size,
            "dynamo.router.prefill_tokens": route.prefill_tokens})
        if not isinstance(request, GenerateRequest) or request.trace_context is not None:
            return request
        return msgspec.structs.replace(request, trace_context=self.carrier())

    def carrier(self) -> dict[str, str]:
        """The root span's context as propagation headers (``traceparent``...), made once."""
        if self._carrier is None:
            from opentelemetry import propagate

            self._carrier = {}
            propagate.inject(self._carrier, self._child_context())
        return self._carrier

    def observe(self, observer: MetricsObserver, model: str) -> TracedObserver:
        """A generation's metrics observer that also reports the first token and the totals to this trace."""
        return TracedObserver(observer, self, model)

    def first_token(self) -> None:
        """The ``first_token`` event of the root span, once per request."""
        if not self._first_token:
            self._first_token = True
            self.root.add_event("first_token")

    def finished(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int, *,
                 cancelled: bool, error: bool) -> None:
        """The request's generation(s) ended: the totals (every choice) on the root span."""
        self.root.set_attributes({MODEL: model, PROMPT_TOKENS: prompt_tokens, COMPLETION_TOKENS: completion_tokens,
                                  CACHED_TOKENS: cached_tokens})
        if cancelled or error:
            self.root.set_attribute("error.type", "cancelled" if cancelled else "backend_error")


class RouteLike(Protocol):
    """The part of a router decision (``router.select.Route``) a ``route`` span shows."""

    instance_id: str
    overlap_blocks: int
    prefill_tokens: int


class MetricsObserver(Protocol):
    """What a generation reports to (``observability.metrics.GenerationObserver``)."""

    started: float

    def tokens(self, count: int) -> None: ...

    def finished(self, prompt_tokens: int, output_tokens: int, cached_tokens: int, *, cancelled: bool,
                 error: bool) -> None: ...


class TracedObserver:
    """A metrics observer that also tells the request's trace: the first token (``tokens`` is then the metrics
    observer's own method: nothing more per token) and the totals when the request's generations end."""

    __slots__ = ("tokens", "started", "_observer", "_trace", "_model")

    def __init__(self, observer: MetricsObserver, trace: RequestTrace, model: str) -> None:
        self._observer = observer
        self._trace = trace
        self._model = model
        self.started = observer.started
        self.tokens: Callable[[int], None] = self._first_tokens

    def _first_tokens(self, count: int) -> None:
        self.tokens = self._observer.tokens
        self._trace.first_token()
        self._observer.tokens(count)

    def finished(self, prompt_tokens: int, output_tokens: int, cached_tokens: int, *, cancelled: bool,
                 error: bool) -> None:
        self.tokens = self._observer.tokens  # no cycle through a bound method of self when no token came
        self._observer.finished(prompt_tokens, output_tokens, cached_tokens, cancelled=cancelled, error=error)
        self._trace.finished(self._model, prompt_tokens, output_tokens, cached_tokens, cancelled=cancelled,
                             error=error)


CURRENT_TRACE: ContextVar[RequestTrace | None] = ContextVar("current_trace", default=None)
"""The trace of the request being served; None while tracing is off (never set) or outside a request."""
