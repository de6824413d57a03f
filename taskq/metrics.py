"""Prometheus metrics, read from Redis at scrape time so that every gateway reports
the same, whole-system figures, however many workers and dispatchers on however
many machines wrote them.

Counters and histograms come from one hash, `taskq:metrics`, which the Lua steps
increment where the transitions happen (`count_transition` in scripts/_lib.lua, and
record_attempt.lua): one HINCRBY per status change or webhook attempt. A field is

    run|<old>|<new>|<ms>|<processor>     a run's status change
    webhook|<state>|<ms>                  a webhook attempt and what followed it

where `<ms>` is a duration rounded UP to two significant digits (the queue wait on
the way into `running`, the attempt's time on the way out of it, the webhook's
latency). Every bucket bound below has at most two significant digits in ms, so the
cumulative bucket counts computed here are exact; `_sum` is estimated from the
rounded values (each counted at the middle of its rounding step: within 5%).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from . import keys
from .broker import Broker
from .models import LEASED, TERMINAL
from .overview import Overview, overview

RUN_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    18000,
    36000,
)
WEBHOOK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15)
_TERMINAL = {s.value for s in TERMINAL}
_LEASED = {s.value for s in LEASED}
# What followed a webhook attempt (record_attempt.lua's state), as an outcome label.
_WEBHOOK_OUTCOME = {"delivered": "delivered", "pending": "failed", "gone": "gone", "dead": "dead"}

Labels = tuple[str, ...]


class _Histogram:
    """Counts of rounded durations (ms) per label set."""

    def __init__(self) -> None:
        self.values: dict[Labels, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, labels: Labels, ms: str, n: int) -> None:
        if ms:
            self.values[labels][int(ms)] += n

    def family(self, name: str, doc: str, label_names: list[str], bounds_s: Iterable[float]) -> HistogramMetricFamily:
        bounds = list(bounds_s)
        fam = HistogramMetricFamily(name, doc, labels=label_names)
        for labels, counts in sorted(self.values.items()):
            cumulative, total, sum_s = [], 0, 0.0
            ordered = sorted(counts.items())
            i = 0
            for bound in bounds:
                while i < len(ordered) and ordered[i][0] <= round(bound * 1000):
                    total += ordered[i][1]
                    i += 1
                cumulative.append((_le(bound), float(total)))
            total = sum(counts.values())
            cumulative.append(("+Inf", float(total)))
            for ms, n in ordered:
                sum_s += n * _midpoint_ms(ms) / 1000
            fam.add_metric(list(labels), cumulative, sum_value=sum_s)
        return fam


def _le(bound: float) -> str:
    return repr(float(bound))


def _midpoint_ms(ms: int) -> float:
    """The middle of the values that round up to `ms` (ceil2 in _lib.lua)."""
    if ms < 100:
        return float(ms)
    step = 1
    while ms > 99 * step:
        step *= 10
    return ms - step / 2


class RedisCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        view = overview(self.broker)
        pipe = self.broker.redis.pipeline(transaction=False)
        for partition in range(self.broker.partitions):
            pipe.hgetall(keys.metrics(partition))
        fields: dict[str, int] = defaultdict(int)
        for counters in pipe.execute():
            for name, n in counters.items():
                fields[name] += int(n)
        yield from _gauges(view)
        yield from _from_fields(fields)


def _gauges(view: Overview) -> Iterator[Metric]:
    depth = GaugeMetricFamily("taskq_queue_depth", "runs waiting in a queue's lanes", labels=["queue"])
    for q in view.queues:
        depth.add_metric([q.name], q.depth)
    yield depth
    yield GaugeMetricFamily("taskq_runs_running", "runs holding a lease", value=view.running)
    yield GaugeMetricFamily(
        "taskq_runs_retry_waiting",
        "runs waiting to be due (a retry's backoff, a later run_at)",
        value=view.retry_waiting,
    )
    yield GaugeMetricFamily(
        "taskq_webhooks_pending", "webhook deliveries waiting to be sent", value=view.webhooks_pending
    )
    yield GaugeMetricFamily(
        "taskq_webhooks_dead", "webhook deliveries given up (dead-letter)", value=view.webhooks_dead
    )
    abandoned = GaugeMetricFamily(
        "taskq_worker_abandoned_threads",
        "threads whose run was ended without them (stuck in a C call past a timeout or cancel), per worker",
        labels=["worker"],
    )
    for w in view.workers:
        abandoned.add_metric([w.name], w.abandoned)
    yield abandoned
    in_flight = GaugeMetricFamily("taskq_limit_in_flight", "units of a limit held by runs in flight", labels=["limit"])
    waiting = GaugeMetricFamily("taskq_limit_lanes_waiting", "lanes waiting for a limit's units", labels=["limit"])
    runs = GaugeMetricFamily("taskq_limit_runs_waiting", "runs in the lanes waiting for a limit", labels=["limit"])
    started = CounterMetricFamily(
        "taskq_limit_units_started", "units of a limit taken by runs that started", labels=["limit"]
    )
    for li in view.limits:
        in_flight.add_metric([li.id], li.in_flight)
        waiting.add_metric([li.id], li.lanes_waiting)
        runs.add_metric([li.id], li.runs_waiting)
        started.add_metric([li.id], li.started)
    yield from (in_flight, waiting, runs, started)
    parked = GaugeMetricFamily("taskq_lanes_held", "lanes held back by a limit or a pause", labels=["processor"])
    held: dict[str, int] = defaultdict(int)
    for lane in view.lanes:
        if lane.state != "ready":
            held[lane.processor] += 1
    for processor, n in sorted(held.items()):
        parked.add_metric([processor], n)
    yield parked
    yield from _memory(view)


def _memory(view: Overview) -> Iterator[Metric]:
    used = GaugeMetricFamily("taskq_redis_memory_used_bytes", "Redis used_memory, per master", labels=["node"])
    most = GaugeMetricFamily(
        "taskq_redis_memory_max_bytes", "Redis maxmemory, per master (0: not set, no high-water check)", labels=["node"]
    )
    for m in view.memory:
        used.add_metric([m.node], m.used_bytes)
        most.add_metric([m.node], m.max_bytes)
    yield from (used, most)
    yield GaugeMetricFamily(
        "taskq_redis_memory_high_water_ratio",
        "fraction of maxmemory past which new runs are refused with 503 (TASKQ_MEMORY_HIGH_WATER; 0: off)",
        value=view.memory_high_water,
    )


def _from_fields(fields: dict[str, int]) -> Iterator[Metric]:
    created: dict[Labels, int] = defaultdict(int)
    finished: dict[Labels, int] = defaultdict(int)
    attempts: dict[Labels, int] = defaultdict(int)
    webhooks: dict[Labels, int] = defaultdict(int)
    wait, duration, latency = _Histogram(), _Histogram(), _Histogram()
    for field, raw in fields.items():
        n = int(raw)
        kind, _, rest = field.partition("|")
        if kind == "run":
            old, new, ms, processor = rest.split("|", 3)
            if not old:
                created[(processor,)] += n
            if new in _TERMINAL:
                finished[(processor, new)] += n
            if old == "queued" and new == "running":
                wait.add((processor,), ms, n)
            if old in _LEASED and new not in _LEASED:
                outcome = "retried" if new == "queued" else new
                attempts[(processor, outcome)] += n
                duration.add((processor, outcome), ms, n)
        elif kind == "webhook":
            state, ms = rest.split("|", 1)
            outcome = _WEBHOOK_OUTCOME.get(state, state)
            webhooks[(outcome,)] += n
            latency.add((outcome,), ms, n)
    yield _counter("taskq_runs_created", "runs created", ["processor"], created)
    yield _counter("taskq_runs_finished", "runs that reached a terminal status", ["processor", "status"], finished)
    yield _counter(
        "taskq_attempts",
        "attempts ended, by outcome: completed, failed, cancelled, retried (back to queued: an error with "
        "retries left, a lost worker, or a shutdown)",
        ["processor", "outcome"],
        attempts,
    )
    yield _counter(
        "taskq_webhook_deliveries",
        "webhook attempts, by outcome: delivered, failed (to be retried), gone (410), dead (given up)",
        ["outcome"],
        webhooks,
    )
    yield wait.family(
        "taskq_queue_wait_seconds", "time from queued (or due for retry) to running", ["processor"], RUN_BUCKETS_S
    )
    yield duration.family(
        "taskq_run_duration_seconds", "time one attempt of a run spent running", ["processor", "outcome"], RUN_BUCKETS_S
    )
    yield latency.family("taskq_webhook_latency_seconds", "webhook attempt latency", ["outcome"], WEBHOOK_BUCKETS_S)


def _counter(name: str, doc: str, label_names: list[str], values: dict[Labels, int]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=label_names)
    for labels, n in sorted(values.items()):
        fam.add_metric(list(labels), n)
    return fam


def render(broker: Broker) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(RedisCollector(broker))
    return generate_latest(registry), CONTENT_TYPE_LATEST
