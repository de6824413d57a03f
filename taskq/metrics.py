"""Prometheus metrics, read from Redis at scrape time so that every gateway reports
the same, whole-system figures."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import keys
from .broker import Broker


class RedisCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        r = self.broker.redis
        queues = sorted(q.removeprefix(keys.RQ_QUEUE_PREFIX) for q in r.smembers(keys.RQ_QUEUES))
        pipe = r.pipeline(transaction=False)
        for q in queues:
            pipe.llen(keys.rq_queue(q))
        for key in (keys.RUNNING, keys.DELAYED, keys.DELIVERIES_DUE, keys.DELIVERIES_DEAD):
            pipe.zcard(key)
        counts = pipe.execute()
        depth = GaugeMetricFamily("taskq_queue_depth", "runs waiting on an RQ queue", labels=["queue"])
        for q, n in zip(queues, counts):
            depth.add_metric([q], n)
        yield depth
        running, delayed, due, dead = counts[len(queues) :]
        yield GaugeMetricFamily("taskq_runs_running", "runs holding a lease", value=running)
        yield GaugeMetricFamily("taskq_runs_retry_waiting", "runs waiting out a retry backoff", value=delayed)
        yield GaugeMetricFamily("taskq_webhooks_pending", "webhook deliveries waiting to be sent", value=due)
        yield GaugeMetricFamily("taskq_webhooks_dead", "webhook deliveries given up (dead-letter)", value=dead)


def render(broker: Broker) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(RedisCollector(broker))
    return generate_latest(registry), CONTENT_TYPE_LATEST
