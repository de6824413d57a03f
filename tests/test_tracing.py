"""Traces (taskq/tracing.py): one trace from the request that made a run, through
each attempt (with the processor's own spans inside), to each webhook delivery, the
W3C traceparent carried across.

In this process the spans go to the SDK's in-memory exporter. Across real processes
(gunicorn, a worker, the dispatcher) they go where an operator's would, by OTLP over
HTTP, configured only with the standard variables, to a real local HTTP server that
stands in for the collector and decodes what it is sent."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskq import keys, tracing
from taskq.broker import Broker
from taskq.gateway import create_app
from tests.conftest import HEADERS, Process, settings_env, wait_until
from tests.receiver import Receiver, serving

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def parse_traceparent(value: str) -> tuple[str, str]:
    """(trace id, span id) of a W3C traceparent."""
    version, trace_id, span_id, flags = value.split("-")
    sampled = int(flags, 16) & 1  # (a trace begun here may also flag its id as random: 03)
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and sampled, value
    return trace_id, span_id


# -- what turns traces on


@pytest.mark.parametrize(
    "env, on",
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "taskq"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_traces_are_on_only_when_the_standard_variables_configure_an_exporter(env, on):
    assert tracing.configured(env) is on


def test_with_traces_off_a_run_stores_no_trace(client, broker):
    r = client.post(
        "/v1/tasks/runs",
        json={"input": {}, "processor": "echo"},
        headers={**HEADERS, "traceparent": CLIENT_TRACEPARENT},
    )
    assert r.status_code == 202
    assert broker.redis.hget(keys.run(r.json["run_id"]), "traceparent") is None


# -- in this process: the gateway, an in-process worker and dispatcher


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Traces on in this process, into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    yield exporter
    tracing.disable()
    provider.shutdown()


@pytest.fixture
def traced_client(spans, broker):  # type: ignore[no-untyped-def]
    app = create_app(broker.settings)  # made with traces on: its routes that make runs have spans
    yield app.test_client()
    app.extensions["taskq"].close()


def by_name(spans: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if (s.name or "").startswith(prefix)]


def ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def test_a_run_continues_the_trace_of_the_request_that_made_it(traced_client, spans, broker):
    r = traced_client.post(
        "/v1/tasks/runs",
        json={"input": {}, "processor": "echo"},
        headers={**HEADERS, "traceparent": CLIENT_TRACEPARENT},
    )
    assert r.status_code == 202
    (server,) = by_name(spans, "POST /v1/tasks/runs")
    assert ids(server)[0] == CLIENT_TRACE and parent_id(server) == CLIENT_SPAN
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 202
    stored = broker.redis.hget(keys.run(r.json["run_id"]), "traceparent")
    assert parse_traceparent(stored) == ids(server)  # the gateway's span, not the client's text


def test_a_request_without_a_valid_traceparent_starts_a_trace(traced_client, spans, broker):
    made = []
    for header in ({}, {"traceparent": "00-not-a-trace-01"}, {"traceparent": "x" * 5000}):
        r = traced_client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers={**HEADERS, **header})
        assert r.status_code == 202
        made.append(parse_traceparent(broker.redis.hget(keys.run(r.json["run_id"]), "traceparent")))
    servers = by_name(spans, "POST /v1/tasks/runs")
    assert [ids(s) for s in servers] == made
    assert all(s.parent is None for s in servers) and len({trace for trace, _ in made}) == 3


def test_a_refused_request_ends_its_span_with_the_error_status(traced_client, spans):
    r = traced_client.post("/v1/tasks/runs", json={"input": {}, "processor": "nope"}, headers=HEADERS)
    assert r.status_code == 422
    (server,) = by_name(spans, "POST /v1/tasks/runs")
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 422
    assert traced_client.get("/v1/tasks/runs", headers=HEADERS).status_code == 200
    assert len(spans.get_finished_spans()) == 1  # reads make no span


def test_every_run_of_a_group_add_continues_the_request_trace(traced_client, spans, broker):
    gid = traced_client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    body = {"inputs": [{"input": {"n": i}, "processor": "echo"} for i in range(3)]}
    r = traced_client.post(
        f"/v1/tasks/groups/{gid}/runs", json=body, headers={**HEADERS, "traceparent": CLIENT_TRACEPARENT}
    )
    assert r.status_code == 200
    (server,) = by_name(spans, "POST /v1/tasks/groups/<group_id>/runs")
    assert parent_id(server) == CLIENT_SPAN
    stored = {broker.redis.hget(keys.run(run_id), "traceparent") for run_id in r.json["run_ids"]}
    assert [parse_traceparent(s) for s in stored] == [ids(server)]


def test_attempts_and_deliveries_are_children_of_the_run_trace(traced_client, spans, broker, drain, deliver, receiver):
    # A webhook of the user's own that names a traceparent: replaced, never sent twice.
    hook = {"url": receiver.url("/hook"), "headers": {"TraceParent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}}
    receiver.answers["/hook"] = ["500", "200"]
    r = traced_client.post(
        "/v1/tasks/runs",
        json={"input": {"failures": 1}, "processor": "flaky", "webhook": hook},
        headers={**HEADERS, "traceparent": CLIENT_TRACEPARENT},
    )
    drain()
    deliver(until=lambda: len(receiver.at("/hook")) == 2)
    (server,) = by_name(spans, "POST /v1/tasks/runs")
    attempts = by_name(spans, "taskq.run flaky")
    deliveries = by_name(spans, "taskq.webhook completed")
    assert [a.attributes["taskq.attempt"] for a in attempts if a.attributes] == [1, 2]
    assert [a.attributes["taskq.outcome"] for a in attempts if a.attributes] == ["error", "completed"]
    assert attempts[0].attributes and attempts[0].attributes["taskq.run_id"] == r.json["run_id"]
    assert [d.attributes["http.response.status_code"] for d in deliveries if d.attributes] == [500, 200]
    for span in attempts + deliveries:
        assert ids(span)[0] == CLIENT_TRACE and parent_id(span) == ids(server)[1]
    sent = [[v for k, v in got.headers.items() if k.lower() == "traceparent"] for got in receiver.at("/hook")]
    assert [[parse_traceparent(v) for v in values] for values in sent] == [[ids(d)] for d in deliveries]


# -- across real processes: gunicorn, a worker, the dispatcher, by OTLP


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, object]


def collected(collector: Receiver) -> list[Span]:
    """The spans an OTLP/HTTP exporter has sent the collector so far."""
    out = []
    for got in collector.at("/v1/traces"):
        body = gzip.decompress(got.body) if got.headers.get("Content-Encoding") == "gzip" else got.body
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
            for scope in resource.scope_spans:
                for s in scope.spans:
                    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in s.attributes}
                    parent = s.parent_span_id.hex() or None
                    out.append(Span(s.name, s.trace_id.hex(), s.span_id.hex(), parent, attributes))
    return out


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A stand-in OTLP collector; processes started from now on send it their spans,
    configured only with the standard variables (spawn passes this environment on)."""
    with serving() as rec:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rec.base)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "taskq-test")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # ms: exported soon, not in 5 s
        yield rec


@pytest.mark.parametrize(
    "pool, processor",
    [("threads", "traced"), ("threads", "traced_async"), ("processes", "traced")],
)
def test_one_trace_from_the_request_through_every_attempt_to_every_delivery(
    pool: str,
    processor: str,
    collector: Receiver,
    receiver: Receiver,
    broker: Broker,
    gunicorn: Callable[..., str],
    worker: Callable[..., Process],
    spawn: Callable[..., Process],
):
    settings = broker.settings.replace(app=("workers.app", "tests.apps.traced"))
    worker(pool, settings=settings)
    spawn("dispatcher", settings=settings)
    url = gunicorn(settings, workers=1)
    receiver.answers["/hook"] = ["500", "200"]

    r = requests.post(
        url + "/v1/tasks/runs",
        json={"input": {}, "processor": processor, "webhook": {"url": receiver.url("/hook")}},
        headers={**HEADERS, "traceparent": CLIENT_TRACEPARENT},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    wait_until(lambda: len(receiver.at("/hook")) == 2, timeout_s=30)

    def whole_trace() -> list[Span] | None:
        got = [s for s in collected(collector) if s.trace_id == CLIENT_TRACE]
        return got if len(got) == 1 + 2 + 2 + 2 else None  # request, attempts, inside, deliveries

    spans = wait_until(whole_trace, timeout_s=30)
    assert isinstance(spans, list)
    named = {
        name: [s for s in spans if s.name.startswith(name)] for name in ("POST", "taskq.run", "inside", "taskq.webhook")
    }
    (server,) = named["POST"]
    assert server.parent_id == CLIENT_SPAN
    attempts = sorted(named["taskq.run"], key=lambda s: int(str(s.attributes["taskq.attempt"])))
    assert [(a.name, a.attributes["taskq.outcome"]) for a in attempts] == [
        (f"taskq.run {processor}", "error"),
        (f"taskq.run {processor}", "completed"),
    ]
    assert all(a.parent_id == server.span_id and a.attributes["taskq.run_id"] == r.json()["run_id"] for a in attempts)
    assert sorted(s.parent_id or "" for s in named["inside"]) == sorted(a.span_id for a in attempts)
    deliveries = named["taskq.webhook"]
    assert all(d.parent_id == server.span_id for d in deliveries)
    sent = [parse_traceparent(got.headers["traceparent"]) for got in receiver.at("/hook")]
    assert sorted(sent) == sorted((d.trace_id, d.span_id) for d in deliveries)


def test_a_proxied_call_carries_the_attempt_trace_to_the_upstream(spans, broker, drain, receiver, monkeypatch):
    monkeypatch.setenv("TASKQ_PROXY_UPSTREAMS", f"model={receiver.base}")  # what the http processor reads
    settings = broker.settings.replace(
        proxy_upstreams=(f"model={receiver.base}",), proxy_forward_headers=("traceparent",)
    )
    app = create_app(settings)
    r = app.test_client().post(
        "/v1/async/model/predict", json={}, headers={**HEADERS, "traceparent": CLIENT_TRACEPARENT}
    )
    app.extensions["taskq"].close()
    assert r.status_code == 202
    drain()
    (server,) = by_name(spans, "POST /v1/async")
    (attempt,) = by_name(spans, "taskq.run http")
    assert parent_id(attempt) == ids(server)[1]
    (got,) = receiver.at("/predict")
    sent = [v for k, v in got.headers.items() if k.lower() == "traceparent"]  # the client's own, forwarded, replaced
    assert [parse_traceparent(v) for v in sent] == [ids(attempt)]


def test_with_traces_off_taskq_imports_no_tracing_code(broker, tmp_path):
    script = """
import sys
from taskq import run, testing, tracing
from taskq.broker import Broker
from taskq.gateway import create_app
from taskq.settings import Settings
from taskq.webhooks.dispatcher import Dispatcher
broker = Broker(Settings.from_env())
app = create_app(broker.settings)
r = app.test_client().post("/v1/tasks/runs", json={"input": {}, "processor": "echo", "webhook": {"url": "http://127.0.0.1:9/"}},
                           headers={"x-api-key": "key-a", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
assert r.status_code == 202, r.data
testing.drain(broker)
Dispatcher(broker).step()
assert not tracing.enabled()
# (redis-py imports parts of the OpenTelemetry API of its own when it is installed)
taskq_would = ("opentelemetry.sdk.trace", "opentelemetry.trace.propagation.tracecontext")
assert not [m for m in taskq_would if m in sys.modules]
"""
    env = {k: v for k, v in settings_env(broker.settings).items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
