"""Traces: OpenTelemetry spans for a run's life, one trace from the request that made
it to each webhook delivery. The one module that imports `opentelemetry` (the `otel`
extra); everything else calls the functions here, which are no-ops when traces are
off: a flag check, no import.

On when the standard variables configure an exporter (`configured`), and the extra is
installed (else a warning, once, and off). The spans:

    POST /v1/tasks/runs …   server    a request that makes runs (gateway/traces.py);
                                      each run stores its context as `traceparent`
    taskq.run <processor>   consumer  one attempt, a child of the run's `traceparent`;
                                      current while the processor runs, so spans the
                                      processor makes are its children
    taskq.webhook <status>  client    one delivery attempt, a child of the run's
                                      `traceparent`; its request carries its own

A process that configured its own SDK tracer provider (`opentelemetry-instrument`,
say) keeps it; otherwise one is made from the variables and set as the global one,
so a processor's `trace.get_tracer(...)` records into the same traces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from .record import RunRecord

log = logging.getLogger("taskq.tracing")

TRACE_HEADERS = ("traceparent", "tracestate")  # W3C Trace Context: what carries a trace across HTTP
EXPORTERS = ("otlp", "console")  # OTEL_TRACES_EXPORTER values taskq knows (comma-separated)
_NOTHING = contextlib.nullcontext()  # reusable: `within` a span that is not there


def configured(env: Mapping[str, str]) -> bool:
    """Whether `env` asks for traces: OTEL_TRACES_EXPORTER names an exporter (not
    `none`), or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); never with OTEL_SDK_DISABLED=true. Other
    OTEL_* variables alone (OTEL_SERVICE_NAME) turn nothing on."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class _State:
    wanted = configured(os.environ)  # not started yet, but to be on first use
    tracer: Tracer | None = None
    lock = threading.Lock()


def _tracer() -> Tracer | None:
    tracer = _State.tracer
    if tracer is None and _State.wanted:
        tracer = _start()
    return tracer


def enabled() -> bool:
    """Whether spans are recorded in this process (started on first ask)."""
    return _tracer() is not None


def _start() -> Tracer | None:
    with _State.lock:
        if _State.tracer is None and _State.wanted:
            _State.wanted = False  # once, whatever happens
            try:
                _State.tracer = _provider().get_tracer("taskq")
            except ImportError as exc:
                log.warning(
                    "OTEL_* variables ask for traces, but %s is not installed: pip install 'taskq-server[otel]'",
                    exc.name,
                )
    return _State.tracer


def _provider() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current  # the process configured its own
    provider = _new_provider(os.environ)
    trace.set_tracer_provider(provider)
    return provider


def _new_provider(env: Mapping[str, str]) -> TracerProvider:
    """A provider as the variables say: its exporters, batched (OTEL_BSP_*), the
    sampler (OTEL_TRACES_SAMPLER) and resource (OTEL_SERVICE_NAME, default `taskq`)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "taskq"}))
    provider = TracerProvider(resource=resource)
    names = [n.strip() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",") if n.strip()]
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_* (HTTP, protobuf)
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER: %r is not one of %s; left out", name, ", ".join(EXPORTERS))
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def enable(provider: TracerProvider) -> None:
    """Records spans with `provider` from now on, whatever the variables say (an
    embedding application's own provider; tests)."""
    with _State.lock:
        _State.tracer = provider.get_tracer("taskq")
        _State.wanted = False


def disable() -> None:
    """Records no more spans in this process."""
    with _State.lock:
        _State.tracer = None
        _State.wanted = False


# -- context: W3C traceparent


def _context(traceparent: str | None) -> Context | None:
    """The remote parent `traceparent` names (None: none, or not a valid one)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _inject(carrier: MutableMapping[str, str], span: Span | None = None) -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span) if span is not None else None)


def traceparent(span: Span | None = None) -> str | None:
    """The W3C traceparent of `span`, else of the current span; None when traces are
    off or there is no span."""
    if _tracer() is None:
        return None
    carrier: dict[str, str] = {}
    _inject(carrier, span)
    return carrier.get("traceparent")


def propagate(headers: dict[str, str], span: Span | None = None) -> dict[str, str]:
    """`headers` carrying the trace of `span` (else of the current span): any
    traceparent or tracestate already there, in any case, is replaced. Unchanged when
    traces are off or there is no span."""
    if _tracer() is None:
        return headers
    carrier: dict[str, str] = {}
    _inject(carrier, span)
    if not carrier:
        return headers
    return {**{k: v for k, v in headers.items() if k.strip().lower() not in TRACE_HEADERS}, **carrier}


@contextlib.contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """Spans started in the block are children of `traceparent` (a span of another
    process: the attempt, for a processor run in a child process)."""
    parent = _context(traceparent) if _tracer() is not None else None
    if parent is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(parent)
    try:
        yield
    finally:
        context.detach(token)


def within(span: Span | None) -> contextlib.AbstractContextManager[Any]:
    """`span` is the current span in the block (nothing when it is None)."""
    if span is None:
        return _NOTHING
    from opentelemetry import trace

    return trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


def _end(span: Span, error: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


# -- the spans


class ServerSpan:
    """A request's span, current from `open_server` until `close`."""

    def __init__(self, span: Span, token: object) -> None:
        self.span = span
        self.token = token

    def close(self, status_code: int) -> None:
        from opentelemetry import context

        self.span.set_attribute("http.response.status_code", status_code)
        context.detach(self.token)  # type: ignore[arg-type]
        _end(self.span, f"HTTP {status_code}" if status_code >= 500 else None)


def open_server(name: str, traceparent: str | None, attributes: dict[str, str]) -> ServerSpan | None:
    """Starts a server span, a child of the request's `traceparent` header when it
    is a valid one, and makes it current; None when traces are off."""
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry import context, trace

    span = tracer.start_span(name, context=_context(traceparent), kind=trace.SpanKind.SERVER, attributes=attributes)
    return ServerSpan(span, context.attach(trace.set_span_in_context(span)))


def start_attempt(record: RunRecord) -> Span | None:
    """The span of the run's current attempt, begun now, not yet current (`within`);
    None when traces are off."""
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    attributes: dict[str, str | int] = {
        "taskq.run_id": record.id,
        "taskq.attempt": record.attempts,
        "taskq.processor": record.processor,
        "taskq.queue": record.queue,
        "taskq.tenant": record.tenant,
    }
    parent = _context(record.get("traceparent"))
    return tracer.start_span(f"taskq.run {record.processor}", parent, SpanKind.CONSUMER, attributes)


def end_attempt(span: Span | None, outcome: str, error: dict[str, Any] | None) -> None:
    """Ends an attempt's span with its outcome (attempt.Outcome.what) and error."""
    if span is None:
        return
    span.set_attribute("taskq.outcome", outcome)
    _end(span, str(error.get("message")) if error else None)


def start_delivery(record: RunRecord, delivery_id: str, status: str, attempt: int, host: str) -> Span | None:
    """The span of one webhook delivery attempt, begun now; None when traces are off."""
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    address, _, port = host.rpartition(":")
    attributes: dict[str, str | int] = {
        "taskq.run_id": record.id,
        "taskq.delivery_id": delivery_id,
        "taskq.delivery.attempt": attempt,
        "taskq.tenant": record.tenant,
        "http.request.method": "POST",
        "server.address": address or host,
    }
    if port.isdigit():
        attributes["server.port"] = int(port)
    parent = _context(record.get("traceparent"))
    return tracer.start_span(f"taskq.webhook {status}", parent, SpanKind.CLIENT, attributes)


def end_delivery(span: Span | None, status_code: int | None, error: str | None, outcome: str) -> None:
    """Ends a delivery attempt's span: the receiver's answer, and what follows
    (delivered, pending, gone, dead)."""
    if span is None:
        return
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    span.set_attribute("taskq.delivery.outcome", outcome)
    failed = error or (f"HTTP {status_code}" if status_code is None or not 200 <= status_code < 300 else None)
    _end(span, failed)
