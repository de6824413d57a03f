"""Every Redis key taskq uses, spelled once.

Data lives in *partitions*: a partition's keys share one hash tag, `taskq:{<tag>}:…`,
so every change one script makes (a run, its group, its lane, its limits, the sets it
sits in) lies in one Redis Cluster slot. On a single Redis there is one partition; on
a cluster there are several (`partitions`), and each id says its own (ids.py). Each
script is passed its partition's prefix as KEYS[1] and builds every key it touches
from the templates below, which scripts.py writes into its prelude (`K.run(id)`,
`K.running`, …): one spelling for Python and Lua alike.

In a partition (`taskq:{tag}:` + …):

    run:{id}                      hash    the run record (record.py lists its fields)
    run:{id}:events               stream  progress messages and state changes of one run
    run:{id}:outputs              hash    output file name -> entry JSON ({name, key, size,
                                          content_type, saved_ms})
    run:{id}:outputs:order        zset    output file name -> its save number (the listing order)
    run:{id}:deliveries           list    the run's webhook delivery ids
    group:{id}                    hash    the group record and its per-status counters
    group:{id}:runs               list    its run ids in the order they were added
    group:{id}:events             stream  task_group_status and task_run.state events
    idem:{tenant}:{digest}        string  Idempotency-Key -> "run_id request_digest", 24 h
    delivery:{id}                 hash    one webhook delivery (one event of one run)
    delivery:{id}:attempts        list    JSON of each attempt, oldest first
    tenant:{tenant}:runs          zset    the tenant's run ids, all at score 0: ordered by id,
                                          which is by creation time (the list endpoint)
    tenant:{tenant}:groups        zset    the tenant's group ids, likewise
    tenant:{tenant}:dead          zset    the tenant's dead-lettered deliveries -> when
    lane:{processor}|{tenant}|{key}   zset  a lane's waiting runs -> priority band * 1e13 +
                                          created_ms (lanes.md: one per processor, tenant and key)
    lanes:{processor}:{tenant}    zset    the tenant's lanes of the processor that have runs
                                          ready -> their turn (taken lowest first)
    ready:{processor}             zset    tenants with a ready lane of the processor -> turn
    ready                         set     the processors with a ready lane here
    parked                        hash    lane -> why it waits: a limit id, or "pause"
    limit:{id}                    hash    a limit's state: n (units in flight), tat (the GCRA's
                                          theoretical arrival time, ms), until (paused until, ms);
                                          units started: in all, this minute (wn of minute win),
                                          the minute before (pn)
    limit:{id}:waiting            zset    lanes waiting for this limit's units -> since when
    limits                        set     the ids of the limits used here (taskq info)
    depth                         hash    queue -> runs waiting in its lanes
    running                       zset    run id -> lease deadline (ms); the reaper's view
    delayed                       zset    what is due later -> when (ms): run ids (retries waiting
                                          out their backoff, runs made with a later `run_at`) and
                                          paused lanes (a rate, a RateLimited; a lane has a '|')
    waiting                       zset    run id -> answer deadline (ms); runs in action_required
    outputs:expiring              zset    run id -> when its output files go (ms; +inf while active)
    deliveries:due                zset    delivery id -> when to try next (ms)
    deliveries:dead               zset    delivery id -> when it was given up (ms)
    metrics                       hash    transition and webhook counters (metrics.py)
    metrics:snapshot:{minute}     hash    totals of runs ended by status and of queue waits as
                                          of the minute's start, taken from metrics by tend.lua
                                          (history.py); minute: epoch ms // 60000, Redis's
                                          clock; expires after SNAPSHOT_KEPT_S
    schedule:{processor}          hash    a schedule's last and next tick (schedule.py)

Not in a partition (each read or written on its own):

    taskq:meta                    hash    the deployment's fixed facts: partitions
    taskq:processors              hash    processor name -> JSON spec, written by workers
    taskq:limits                  hash    named Limit -> its budget, as workers declared it
    taskq:workers                 zset    worker name -> last beat (ms): who is alive
    taskq:worker:{name}           hash    a worker: host, pid, queues, processors, concurrency, ...
    taskq:rate:{tenant}           string  runs the tenant created in the current second
    taskq:outputs:secret          string  the key that signs output URLs (unless configured)
    taskq:tenant:{tenant}:secret  string  the tenant's default webhook secret
    taskq:dashboard:session:{digest}  string  an open dashboard session -> its tenant

RQ's own keys: on a single Redis, `rq:queue:{queue}` lists the run ids waiting in the
queue's lanes (a mirror, so `rq info` shows its depth), and `rq:workers` /
`rq:worker:{name}` register each worker with RQ (registration.py).
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Callable

from .ids import partition_of

PREFIX = "taskq:"
MAX_PARTITIONS = 256

# Keys inside a partition, relative to its prefix: the one spelling, for Python and
# (through scripts.py) for Lua. A `{name}` is filled in by the caller.
TEMPLATES: dict[str, str] = {
    "run": "run:{id}",
    "run_events": "run:{id}:events",
    "run_outputs": "run:{id}:outputs",
    "run_outputs_order": "run:{id}:outputs:order",
    "run_deliveries": "run:{id}:deliveries",
    "group": "group:{id}",
    "group_runs": "group:{id}:runs",
    "group_events": "group:{id}:events",
    "idempotency": "idem:{tenant}:{digest}",
    "delivery": "delivery:{id}",
    "delivery_attempts": "delivery:{id}:attempts",
    "tenant_runs": "tenant:{tenant}:runs",
    "tenant_groups": "tenant:{tenant}:groups",
    "tenant_dead": "tenant:{tenant}:dead",
    "lane": "lane:{lane}",
    "lanes": "lanes:{processor}:{tenant}",
    "ready": "ready:{processor}",
    "ready_processors": "ready",
    "parked": "parked",
    "limit": "limit:{id}",
    "limit_waiting": "limit:{id}:waiting",
    "limits": "limits",
    "depth": "depth",
    "running": "running",
    "delayed": "delayed",
    "waiting": "waiting",
    "outputs_expiring": "outputs:expiring",
    "deliveries_due": "deliveries:due",
    "deliveries_dead": "deliveries:dead",
    "metrics": "metrics",
    "metrics_snapshot": "metrics:snapshot:{minute}",
    "schedule": "schedule:{processor}",
}
_FIELD = re.compile(r"\{(\w+)\}")

SNAPSHOT_KEPT_S = 2 * 3600  # a metrics:snapshot hash lives this long after it is taken

META = PREFIX + "meta"
PROCESSORS = PREFIX + "processors"
LIMITS = PREFIX + "limits"
WORKERS = PREFIX + "workers"
OUTPUTS_SECRET = PREFIX + "outputs:secret"
# Pub/Sub: `taskq:wake:{processor}` carries a partition's tag when a lane of the
# processor becomes ready there, or a run of it is made for later (idle workers wake).
WAKE = PREFIX + "wake:"
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_QUEUES = "rq:queues"
RQ_WORKERS = "rq:workers"


def _slot(key: str) -> int:
    """The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, mod 16384)."""
    return binascii.crc_hqx(key.encode(), 0) % 16384


@functools.cache
def tag(partition: int) -> str:
    """Partition `partition`'s hash tag. The tags spread over the cluster's slot space
    the way the bits of their number, reversed, spread over [0, 1): partitions 0..P-1
    fall evenly into the contiguous slot ranges `redis-cli --cluster create` gives
    each master, for any P. Fixed forever: data never moves when P grows."""
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partition {partition} is not in 0..{MAX_PARTITIONS - 1}")
    reversed_bits = int(f"{partition:08b}"[::-1], 2)
    width = 16384 // MAX_PARTITIONS
    target = reversed_bits * width
    n = 0
    while not target <= _slot(f"{partition}.{n}") < target + width:
        n += 1
    return f"{partition}.{n}"


def prefix(partition: int) -> str:
    """What every key of the partition begins with (KEYS[1] of its scripts)."""
    return f"{PREFIX}{{{tag(partition)}}}:"


def in_partition(partition: int, template: str, **fields: str) -> str:
    return prefix(partition) + TEMPLATES[template].format(**fields)


def _of(template: str) -> Callable[[int], str]:
    def key(partition: int) -> str:
        return in_partition(partition, template)

    return key


running = _of("running")
delayed = _of("delayed")
waiting = _of("waiting")
outputs_expiring = _of("outputs_expiring")
deliveries_due = _of("deliveries_due")
deliveries_dead = _of("deliveries_dead")
metrics = _of("metrics")
depth = _of("depth")
parked = _of("parked")
limits_used = _of("limits")


def metrics_snapshot(partition: int, minute: int) -> str:
    return in_partition(partition, "metrics_snapshot", minute=str(minute))


def run(run_id: str) -> str:
    return in_partition(partition_of(run_id), "run", id=run_id)


def run_events(run_id: str) -> str:
    return in_partition(partition_of(run_id), "run_events", id=run_id)


def run_outputs(run_id: str) -> str:
    return in_partition(partition_of(run_id), "run_outputs", id=run_id)


def run_outputs_order(run_id: str) -> str:
    return in_partition(partition_of(run_id), "run_outputs_order", id=run_id)


def run_deliveries(run_id: str) -> str:
    return in_partition(partition_of(run_id), "run_deliveries", id=run_id)


def group(group_id: str) -> str:
    return in_partition(partition_of(group_id), "group", id=group_id)


def group_runs(group_id: str) -> str:
    return in_partition(partition_of(group_id), "group_runs", id=group_id)


def group_events(group_id: str) -> str:
    return in_partition(partition_of(group_id), "group_events", id=group_id)


def delivery(delivery_id: str) -> str:
    return in_partition(partition_of(delivery_id), "delivery", id=delivery_id)


def delivery_attempts(delivery_id: str) -> str:
    return in_partition(partition_of(delivery_id), "delivery_attempts", id=delivery_id)


def tenant_runs(partition: int, tenant: str) -> str:
    return in_partition(partition, "tenant_runs", tenant=tenant)


def tenant_groups(partition: int, tenant: str) -> str:
    return in_partition(partition, "tenant_groups", tenant=tenant)


def tenant_dead(partition: int, tenant: str) -> str:
    return in_partition(partition, "tenant_dead", tenant=tenant)


def ready(partition: int, processor: str) -> str:
    return in_partition(partition, "ready", processor=processor)


def lanes(partition: int, processor: str, tenant: str) -> str:
    return in_partition(partition, "lanes", processor=processor, tenant=tenant)


def lane(partition: int, lane_id: str) -> str:
    return in_partition(partition, "lane", lane=lane_id)


def limit(partition: int, limit_id: str) -> str:
    return in_partition(partition, "limit", id=limit_id)


def limit_waiting(partition: int, limit_id: str) -> str:
    return in_partition(partition, "limit_waiting", id=limit_id)


def schedule(partition: int, processor: str) -> str:
    return in_partition(partition, "schedule", processor=processor)


def lua_templates() -> str:
    """The templates as Lua: `K.run(id)`, `K.lane(lane)`, and plain keys such as
    `K.running`, all from PFX (the partition's prefix, KEYS[1])."""
    lines = ["local K = {}"]
    for name, template in TEMPLATES.items():
        names = _FIELD.findall(template)
        parts = [p for p in re.split(r"(\{\w+\})", template) if p]
        expr = " .. ".join(p[1:-1] if _FIELD.fullmatch(p) else repr(p).replace('"', "'") for p in parts)
        if names:
            lines.append(f"function K.{name}({', '.join(names)}) return PFX .. {expr} end")
        else:
            lines.append(f"K.{name} = PFX .. {expr}")
    return "\n".join(lines) + "\n"


def rq_queue(name: str) -> str:
    return RQ_QUEUE_PREFIX + name


def rq_worker(name: str) -> str:
    return f"rq:worker:{name}"


def worker(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def rate(tenant: str) -> str:
    return f"{PREFIX}rate:{tenant}"


def tenant_secret(tenant: str) -> str:
    return f"{PREFIX}tenant:{tenant}:secret"


def dashboard_session(digest: str) -> str:
    return f"{PREFIX}dashboard:session:{digest}"
