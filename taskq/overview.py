"""What an operator asks first (`taskq info`, the dashboard's front page, `/metrics`):
queues with their depth and the age of their oldest waiting run, workers with what
they serve and hold, limits with their use, the lanes that wait and why, schedules,
what else waits (retries, webhooks), and how full Redis is (capacity.py). Read straight from Redis, every partition
summed, in a few pipelined round trips.

Workers are those of taskq's registry that are alive (engine/registration.py); the
runs a worker holds are the leases whose token names it (`{worker_name}:{hex}.n`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from . import capacity, keys
from .broker import Broker, translated
from .capacity import NodeMemory
from .lanes import lane_parts
from .registry import live_workers

MAX_LEASES_READ = 10_000  # more runs in flight than this are counted, not attributed
MAX_LANES_READ = 200  # lanes shown (ready ones of each processor, then parked ones)


@dataclass
class QueueInfo:
    name: str
    depth: int
    oldest_age_s: float | None  # since the oldest run waiting in its lanes was made


@dataclass
class WorkerInfo:
    name: str
    state: str
    queues: list[str]
    processors: list[str]
    concurrency: int
    in_flight: int
    abandoned: int = 0  # threads whose run was ended without them (stuck in a C call)
    hostname: str = ""
    pid: str = ""
    last_heartbeat_age_s: float | None = None


@dataclass
class LimitInfo:
    id: str  # n:<name>, p:<processor>[:<key>], t:<tenant>
    in_flight: int
    lanes_waiting: int  # lanes parked until it gives units back
    paused_until_ms: int | None  # a RateLimited pause
    concurrency: int | None = None  # its budget, as declared by a live worker or the processor
    rate: str | None = None
    runs_waiting: int = 0  # runs in the lanes waiting for it (of the first MAX_LANES_READ lanes)
    started_this_minute: int = 0  # units started since the minute began (Redis's clock)
    started_last_minute: int = 0  # units started in the minute before
    started: int = 0  # units started in all


@dataclass
class LaneInfo:
    processor: str
    tenant: str
    key: str
    depth: int
    state: str  # "ready", "waiting for <limit>", "paused"


@dataclass
class ScheduleInfo:
    processor: str
    schedule: str
    last_tick_ms: int | None
    next_tick_ms: int | None


@dataclass
class Overview:
    queues: list[QueueInfo] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)
    limits: list[LimitInfo] = field(default_factory=list)
    lanes: list[LaneInfo] = field(default_factory=list)
    schedules: list[ScheduleInfo] = field(default_factory=list)
    running: int = 0
    retry_waiting: int = 0  # runs waiting in the due set: retries, and runs made for later
    webhooks_pending: int = 0
    webhooks_dead: int = 0
    cluster: bool = False  # a Redis Cluster (else one Redis)
    masters: int = 1  # the cluster's masters holding slots
    partitions: int = 1  # the partitions the data is spread over (keys.py)
    memory: list[NodeMemory] = field(default_factory=list)  # each master's, read now
    memory_high_water: float = 0.0  # TASKQ_MEMORY_HIGH_WATER: new runs refused past it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def memory_summary(self) -> str:
        return capacity.summary(self.memory, self.memory_high_water)


def overview(broker: Broker) -> Overview:
    with translated():
        now = broker.now_ms()
        specs = {name: json.loads(s) for name, s in broker.redis.hgetall(keys.PROCESSORS).items()}
        out = Overview(cluster=broker.cluster, partitions=broker.partitions)
        out.memory = capacity.read(broker.redis)
        out.memory_high_water = broker.settings.memory_high_water
        if broker.cluster:
            out.masters = len(broker.redis.get_primaries())
        _partitions(broker, specs, now, out)
        named = _workers(broker, now, out)
        _budgets(named, specs, broker.settings.tenant_concurrency, out)
        _schedules(broker, specs, out)
    return out


def _partitions(broker: Broker, specs: dict[str, Any], now: int, out: Overview) -> None:
    depth: dict[str, int] = {}
    oldest: dict[str, int] = {}
    limits: dict[str, LimitInfo] = {}
    for partition in range(broker.partitions):
        pipe = broker.redis.pipeline(transaction=False)
        pipe.hgetall(keys.depth(partition))
        for key in (keys.running, keys.delayed, keys.deliveries_due, keys.deliveries_dead):
            pipe.zcard(key(partition))
        pipe.hgetall(keys.parked(partition))
        pipe.smembers(keys.limits_used(partition))
        for name in specs:
            pipe.zrange(keys.ready(partition, name), 0, MAX_LANES_READ - 1)
        depths, running, delayed, due, dead, parked, used, *ready = pipe.execute()
        out.running += running
        out.retry_waiting += delayed - sum(1 for why in parked.values() if why == "pause")  # (paused lanes)
        out.webhooks_pending += due
        out.webhooks_dead += dead
        for queue, n in depths.items():
            depth[queue] = depth.get(queue, 0) + int(n)
        lanes = [(f"{name}|{t}", "ready") for name, tenants in zip(specs, ready, strict=True) for t in tenants]
        _lanes(broker, partition, specs, lanes, parked, now, oldest, out)
        _limits(broker, partition, used, limits, now)
    out.queues = [
        QueueInfo(q, n, (now - oldest[q]) / 1000 if q in oldest else None) for q, n in sorted(depth.items()) if n >= 0
    ]
    out.limits = sorted(limits.values(), key=lambda li: li.id)


def _lanes(
    broker: Broker,
    partition: int,
    specs: dict[str, Any],
    ready: list[tuple[str, str]],
    parked: dict[str, str],
    now: int,
    oldest: dict[str, int],
    out: Overview,
) -> None:
    """The lanes of the ready tenants (each tenant's lanes) and the parked lanes: their
    depth, their state, and the age of their oldest run."""
    pipe = broker.redis.pipeline(transaction=False)
    for processor_tenant, _ in ready:
        processor, tenant = processor_tenant.split("|", 1)
        pipe.zrange(keys.lanes(partition, processor, tenant), 0, MAX_LANES_READ - 1)
    tenants_lanes = pipe.execute()
    lanes = [(f"{pt}|{key}", "ready") for (pt, _), keys_ in zip(ready, tenants_lanes, strict=True) for key in keys_]
    for lane, why in parked.items():
        lanes.append((lane, "paused" if why == "pause" else f"waiting for {why}"))
    lanes = lanes[:MAX_LANES_READ]
    pipe = broker.redis.pipeline(transaction=False)
    for lane, _ in lanes:
        pipe.zcard(keys.lane(partition, lane))
        pipe.zrange(keys.lane(partition, lane), 0, 0, withscores=True)
    replies = pipe.execute()
    for i, (lane, state) in enumerate(lanes):
        count, head = replies[2 * i], replies[2 * i + 1]
        if not count:
            continue
        processor, tenant, key = lane_parts(lane)
        out.lanes.append(LaneInfo(processor, tenant, key, count, state))
        queue = (specs.get(processor) or {}).get("queue") or "default"
        made = int(head[0][1] % 1e13) if head else now  # a lane's score: band * 1e13 + created_ms
        oldest[queue] = min(oldest.get(queue, now), made)


def _limits(broker: Broker, partition: int, used: set[str], limits: dict[str, LimitInfo], now: int) -> None:
    ids = sorted(used)
    pipe = broker.redis.pipeline(transaction=False)
    for limit_id in ids:
        pipe.hmget(keys.limit(partition, limit_id), "n", "until", "win", "wn", "pn", "started")
        pipe.zrange(keys.limit_waiting(partition, limit_id), 0, MAX_LANES_READ - 1)
    replies = pipe.execute()
    pipe = broker.redis.pipeline(transaction=False)
    for waiting in replies[1::2]:
        for lane in waiting:
            pipe.zcard(keys.lane(partition, lane))
    depths = iter(pipe.execute())
    minute = now // 60000
    for i, limit_id in enumerate(ids):
        (n, until, win, wn, pn, started), waiting = replies[2 * i], replies[2 * i + 1]
        info = limits.setdefault(limit_id, LimitInfo(limit_id, 0, 0, None))
        info.in_flight += int(n or 0)
        info.lanes_waiting += len(waiting)
        info.runs_waiting += sum(next(depths) for _ in waiting)
        info.started += int(started or 0)
        win = int(win or 0)
        if win == minute:
            info.started_this_minute += int(wn or 0)
            info.started_last_minute += int(pn or 0)
        elif win == minute - 1:
            info.started_last_minute += int(wn or 0)
        if until and int(until) > now:
            info.paused_until_ms = max(info.paused_until_ms or 0, int(until))


def _workers(broker: Broker, now: int, out: Overview) -> dict[str, dict[str, Any]]:
    """The live workers; returns the budgets of the named limits they declare."""
    beats = dict(broker.redis.zrange(keys.WORKERS, 0, -1, withscores=True))
    held: dict[str, int] = {}
    pipe = broker.redis.pipeline(transaction=False)
    for partition in range(broker.partitions):
        pipe.zrange(keys.running(partition), 0, MAX_LEASES_READ - 1)
    leased = [run_id for ids in pipe.execute() for run_id in ids][:MAX_LEASES_READ]
    pipe = broker.redis.pipeline(transaction=False)
    for run_id in leased:
        pipe.hget(keys.run(run_id), "token")
    for token in pipe.execute():
        if token:
            name = token.rsplit(":", 1)[0]
            held[name] = held.get(name, 0) + 1
    budgets: dict[str, dict[str, Any]] = {}
    for rec in live_workers(broker):
        name = rec["name"]
        budgets.update(json.loads(rec.get("limits") or "{}"))
        out.workers.append(
            WorkerInfo(
                name=name,
                state=rec.get("state", "?"),
                queues=[q for q in rec.get("queues", "").split(",") if q],
                processors=[p for p in rec.get("processors", "").split(",") if p],
                concurrency=int(rec.get("concurrency") or 1),
                in_flight=held.get(name, 0),
                abandoned=int(rec.get("abandoned") or 0),
                hostname=rec.get("host", ""),
                pid=rec.get("pid", ""),
                last_heartbeat_age_s=(now - beats[name]) / 1000 if name in beats else None,
            )
        )
    out.workers.sort(key=lambda w: w.name)
    return budgets


def _budgets(named: dict[str, dict[str, Any]], specs: dict[str, Any], tenant_cap: int, out: Overview) -> None:
    """Each limit's budget: a named one's as live workers declare it, a processor's
    own from its spec, the tenant cap from the settings."""
    for info in out.limits:
        kind, _, rest = info.id.partition(":")
        if kind == "n":
            budget = named.get(info.id)
        elif kind == "p":
            budget = (specs.get(rest.split(":", 1)[0]) or {}).get("flow", {}).get("own")
        else:
            budget = {"concurrency": tenant_cap}
        if budget:
            info.concurrency = budget.get("concurrency") or None
            info.rate = budget.get("rate")


def _schedules(broker: Broker, specs: dict[str, Any], out: Overview) -> None:
    """Each schedule with its last and next tick. Its state lives with its runs
    (Scheduler.partition), so every partition is asked: one round trip."""
    scheduled = [(name, spec["schedule"]) for name, spec in sorted(specs.items()) if spec.get("schedule")]
    pipe = broker.redis.pipeline(transaction=False)
    for name, _ in scheduled:
        for partition in range(broker.partitions):
            pipe.hmget(keys.schedule(partition, name), "last", "next")
    replies = iter(pipe.execute())
    for name, schedule in scheduled:
        found = [(last, next_) for last, next_ in (next(replies) for _ in range(broker.partitions)) if next_]
        last, next_ = found[0] if found else (None, None)
        out.schedules.append(ScheduleInfo(name, schedule, int(last) if last else None, int(next_) if next_ else None))
