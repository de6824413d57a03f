"""What an operator asks first (`taskq info`, the dashboard's front page): queues
with their depth and the age of their oldest run, workers with their concurrency and
the runs they hold, and what waits (retries, webhooks). Read straight from Redis.

Workers are those RQ has registered (`rq:workers`, `rq:worker:{name}`); the runs a
worker holds are the leases in `taskq:running` whose token names it
(`{worker_name}:{hex}`). A worker that records a `concurrency` field is shown with
it; otherwise it holds one run at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import keys
from .broker import Broker, now_ms, translated

MAX_LEASES_READ = 10_000  # more runs in flight than this are counted, not attributed


@dataclass
class QueueInfo:
    name: str
    depth: int
    oldest_age_s: float | None  # since the oldest waiting run was put on the queue


@dataclass
class WorkerInfo:
    name: str
    state: str
    queues: list[str]
    concurrency: int
    in_flight: int
    abandoned: int = 0  # threads whose run was ended without them (stuck in a C call)
    hostname: str = ""
    pid: str = ""
    last_heartbeat_age_s: float | None = None


@dataclass
class Overview:
    queues: list[QueueInfo] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)
    running: int = 0
    retry_waiting: int = 0
    webhooks_pending: int = 0
    webhooks_dead: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overview(broker: Broker) -> Overview:
    r = broker.redis
    with translated():
        queue_names = sorted(q.removeprefix(keys.RQ_QUEUE_PREFIX) for q in r.smembers(keys.RQ_QUEUES))
        worker_names = sorted(r.smembers(keys.RQ_WORKERS))
        pipe = r.pipeline(transaction=False)
        for q in queue_names:
            pipe.llen(keys.rq_queue(q))
            pipe.lindex(keys.rq_queue(q), 0)
        for key in (keys.RUNNING, keys.DELAYED, keys.DELIVERIES_DUE, keys.DELIVERIES_DEAD):
            pipe.zcard(key)
        for w in worker_names:
            pipe.hgetall(w if w.startswith("rq:worker:") else keys.rq_worker(w))
        pipe.zrange(keys.RUNNING, 0, MAX_LEASES_READ - 1)
        replies = pipe.execute()
        n = 2 * len(queue_names)
        queue_replies, counts = replies[:n], replies[n : n + 4]
        worker_records, leased = replies[n + 4 : -1], replies[-1]
        oldest = _enqueued_ms(broker, [queue_replies[2 * i + 1] for i in range(len(queue_names))])
        holders = _holders(broker, leased)
    now = now_ms()
    out = Overview(running=counts[0], retry_waiting=counts[1], webhooks_pending=counts[2], webhooks_dead=counts[3])
    for i, q in enumerate(queue_names):
        enqueued = oldest[i]
        age = (now - enqueued) / 1000 if enqueued is not None else None
        out.queues.append(QueueInfo(q, queue_replies[2 * i], age))
    for w, rec in zip(worker_names, worker_records, strict=True):
        if not rec:
            continue  # registered, but its key has expired: a dead worker RQ will clean up
        name = w.removeprefix("rq:worker:")
        beat = _rq_time_ms(rec.get("last_heartbeat"))
        out.workers.append(
            WorkerInfo(
                name=name,
                state=rec.get("state", "?"),
                queues=[q for q in rec.get("queues", "").split(",") if q],
                concurrency=int(rec.get("concurrency") or 1),
                in_flight=holders.get(name, 0),
                abandoned=int(rec.get("abandoned") or 0),
                hostname=rec.get("hostname", ""),
                pid=rec.get("pid", ""),
                last_heartbeat_age_s=(now - beat) / 1000 if beat else None,
            )
        )
    return out


def _enqueued_ms(broker: Broker, job_ids: list[str | None]) -> list[int | None]:
    pipe = broker.redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.rq_job(job_id or "-"), "enqueued_at")
    return [_rq_time_ms(v) for v in pipe.execute()]


def _holders(broker: Broker, run_ids: list[str]) -> dict[str, int]:
    """Runs in flight per worker name, from the lease tokens."""
    pipe = broker.redis.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hget(keys.run(run_id), "token")
    held: dict[str, int] = {}
    for token in pipe.execute():
        if token:
            name = token.rsplit(":", 1)[0]
            held[name] = held.get(name, 0) + 1
    return held


def _rq_time_ms(value: str | None) -> int | None:
    """RQ's timestamps (ISO, UTC, sometimes without a zone) as epoch ms."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
