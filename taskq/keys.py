"""Every Redis key taskq uses, spelled once, behind one prefix.

    taskq:run:{id}                hash    the run record (see run.py for its fields)
    taskq:run:{id}:events         stream  progress messages and state changes of one run
    taskq:idem:{tenant}:{digest}  string  Idempotency-Key -> run id, 24 h
    taskq:processors              hash    processor name -> JSON spec, written by workers
    taskq:running                 zset    run id -> lease deadline (ms); the reaper's view
    taskq:delayed                 zset    run id -> due time (ms); retries waiting their backoff
    taskq:group:{id}              hash    group record and its per-status counters
    taskq:group:{id}:runs         list    run ids in the order they were added
    taskq:group:{id}:events       stream  task_group_status and task_run.state events
    taskq:delivery:{id}           hash    one webhook delivery (one event of one run)
    taskq:delivery:{id}:attempts  list    JSON of each attempt, oldest first
    taskq:run:{id}:deliveries     list    the run's delivery ids
    taskq:deliveries:due          zset    delivery id -> when to try next (ms)
    taskq:deliveries:dead         zset    delivery id -> when it was given up (ms)
    taskq:tenant:{tenant}:secret  string  the tenant's default webhook secret
    taskq:rate:{tenant}:{second}  string  runs the tenant created in that second (rate limit)
    taskq:stranded:{job_id}       string  when the rescue first saw an RQ job left in an
                                          intermediate list by a worker that died (ms)

RQ's own keys (`rq:queue:{name}`, `rq:job:{id}`) are written by the scripts in
scripts/ so that a run and its RQ job are created in one atomic step; the RQ job id
is `{run_id}-{n}`, n counting the times the run was put on its queue.
"""

from __future__ import annotations

PREFIX = "taskq:"
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_JOB_PREFIX = "rq:job:"
RQ_QUEUES = "rq:queues"

PROCESSORS = PREFIX + "processors"
RUNNING = PREFIX + "running"
DELAYED = PREFIX + "delayed"
DELIVERIES_DUE = PREFIX + "deliveries:due"
DELIVERIES_DEAD = PREFIX + "deliveries:dead"


def run(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}"


def run_events(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:events"


def run_deliveries(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:deliveries"


def idempotency(tenant: str, digest: str) -> str:
    return f"{PREFIX}idem:{tenant}:{digest}"


def group(group_id: str) -> str:
    return f"{PREFIX}group:{group_id}"


def group_runs(group_id: str) -> str:
    return f"{PREFIX}group:{group_id}:runs"


def group_events(group_id: str) -> str:
    return f"{PREFIX}group:{group_id}:events"


def delivery(delivery_id: str) -> str:
    return f"{PREFIX}delivery:{delivery_id}"


def delivery_attempts(delivery_id: str) -> str:
    return f"{PREFIX}delivery:{delivery_id}:attempts"


def rate(tenant: str, second: int) -> str:
    return f"{PREFIX}rate:{tenant}:{second}"


def tenant_secret(tenant: str) -> str:
    return f"{PREFIX}tenant:{tenant}:secret"


def rq_queue(name: str) -> str:
    return RQ_QUEUE_PREFIX + name


def rq_intermediate(queue: str) -> str:
    """Where RQ's single-queue dequeue (BLMOVE) puts a job until it is taken."""
    return RQ_QUEUE_PREFIX + queue + ":intermediate"


def rq_job(job_id: str) -> str:
    return RQ_JOB_PREFIX + job_id
