"""Every Redis key taskq uses, spelled once, behind one prefix.

    taskq:run:{id}                hash    the run record (see run.py for its fields)
    taskq:run:{id}:events         stream  progress messages and state changes of one run
    taskq:run:{id}:outputs        hash    the run's output files: name -> entry JSON ({name, key,
                                          size, content_type, saved_ms})
    taskq:run:{id}:outputs:order  zset    output file name -> when it was saved (a number counting
                                          the run's saves): the order they are listed in
    taskq:idem:{tenant}:{digest}  string  Idempotency-Key -> run id, 24 h
    taskq:processors              hash    processor name -> JSON spec, written by workers
    taskq:running                 zset    run id -> lease deadline (ms); the reaper's view
    taskq:delayed                 zset    run id -> due time (ms); retries waiting their backoff
    taskq:waiting                 zset    run id -> answer deadline (ms); runs in action_required
    taskq:outputs:expiring        zset    run id -> when its output files go (ms; +inf while
                                          the run is active)
    taskq:outputs:secret          string  the key that signs output URLs (unless configured)
    taskq:group:{id}              hash    group record and its per-status counters
    taskq:group:{id}:runs         list    run ids in the order they were added
    taskq:group:{id}:events       stream  task_group_status and task_run.state events
    taskq:delivery:{id}           hash    one webhook delivery (one event of one run)
    taskq:delivery:{id}:attempts  list    JSON of each attempt, oldest first
    taskq:run:{id}:deliveries     list    the run's delivery ids
    taskq:deliveries:due          zset    delivery id -> when to try next (ms)
    taskq:deliveries:dead         zset    delivery id -> when it was given up (ms)
    taskq:tenant:{tenant}:dead    zset    the same, for the tenant's own deliveries only (the
                                          dashboard's dead-letter page); trimmed to the
                                          retention when written, expires with it
    taskq:tenant:{tenant}:secret  string  the tenant's default webhook secret
    taskq:tenant:{tenant}:runs    zset    the tenant's run ids, all at score 0: ordered by id,
                                          which is by creation time (the list endpoint)
    taskq:tenant:{tenant}:groups  zset    the tenant's group ids, likewise
    taskq:metrics                 hash    transition and webhook counters by label and
                                          duration (metrics.py reads it at scrape time)
    taskq:rate:{tenant}:{second}  string  runs the tenant created in that second of Redis's
                                          clock (rate limit)
    taskq:stranded:{job_id}       string  when the rescue first saw an RQ job left in an
                                          intermediate list by a worker that died (ms)
    taskq:dashboard:session:{digest}  string  an open dashboard session -> its tenant;
                                          expires with the session, deleted by sign-out

RQ's own keys (`rq:queue:{name}`, `rq:job:{id}`) are written by the scripts in
scripts/ so that a run and its RQ job are created in one atomic step; the RQ job id
is `{run_id}-{n}`, n counting the times the run was put on its queue.
"""

from __future__ import annotations

PREFIX = "taskq:"
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_JOB_PREFIX = "rq:job:"
RQ_QUEUES = "rq:queues"
RQ_WORKERS = "rq:workers"

PROCESSORS = PREFIX + "processors"
RUNNING = PREFIX + "running"
DELAYED = PREFIX + "delayed"
WAITING = PREFIX + "waiting"
OUTPUTS_EXPIRING = PREFIX + "outputs:expiring"
OUTPUTS_SECRET = PREFIX + "outputs:secret"
DELIVERIES_DUE = PREFIX + "deliveries:due"
DELIVERIES_DEAD = PREFIX + "deliveries:dead"
METRICS = PREFIX + "metrics"


def run(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}"


def run_events(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:events"


def run_outputs(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:outputs"


def run_outputs_order(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:outputs:order"


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


def rate_prefix(tenant: str) -> str:
    """The tenant's rate-limit counters, one per second (create.lua appends it)."""
    return f"{PREFIX}rate:{tenant}:"


def tenant_secret(tenant: str) -> str:
    return f"{PREFIX}tenant:{tenant}:secret"


def tenant_runs(tenant: str) -> str:
    return f"{PREFIX}tenant:{tenant}:runs"


def tenant_groups(tenant: str) -> str:
    return f"{PREFIX}tenant:{tenant}:groups"


def tenant_dead(tenant: str) -> str:
    return f"{PREFIX}tenant:{tenant}:dead"


def dashboard_session(digest: str) -> str:
    return f"{PREFIX}dashboard:session:{digest}"


def rq_worker(name: str) -> str:
    return f"rq:worker:{name}"


def rq_queue(name: str) -> str:
    return RQ_QUEUE_PREFIX + name


def rq_intermediate(queue: str) -> str:
    """Where RQ's single-queue dequeue (BLMOVE) puts a job until it is taken."""
    return RQ_QUEUE_PREFIX + queue + ":intermediate"


def rq_job(job_id: str) -> str:
    return RQ_JOB_PREFIX + job_id
