"""Figure 4: pickup latency with an idle worker, in microseconds. taskq: the
Procfile's worker (threads, concurrency 32); from just before the run is created
(taskq's Python API, one script call) to the moment its `running` event is read
from the run's event stream (a blocking XREAD that was waiting for it): an upper
bound, one XREAD delivery more than the pickup itself. RQ (SimpleWorker): from
the job's `enqueued_at` to its `started_at` (RQ's own microsecond timestamps).
One run at a time, the worker idle in between."""

from __future__ import annotations

import time
from datetime import datetime

from taskq import keys
from taskq import run as taskq_run
from taskq.models import RunInput

from .. import rqside
from ..harness import wait_registered
from ..report import Row
from ..session import Session

IDLE_S = 0.005  # between runs, so the worker is back waiting on its queue


def run(s: Session) -> None:
    tq = _taskq(s, s.mode.latency_runs)
    bare = _rq(s, "simple", s.mode.latency_runs)
    s.results.details["pickup"] = {"taskq": tq, "RQ": bare}
    for pct, target in (("p50", 2000.0), ("p99", 10000.0)):
        s.results.add(
            Row(
                f"4 pickup {pct}, default worker",
                tq[pct],
                bare[pct],
                "us",
                f"taskq <= {target:,.0f} us",
                tq[pct] <= target,
            )
        )


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    n = len(values)
    return {"p50": values[n // 2], "p99": values[min(n - 1, int(n * 0.99))], "n": n, "max": values[-1]}


def _taskq(s: Session, n: int) -> dict[str, float]:
    s.reset()
    worker = s.spawner.taskq_worker(s.settings, burst=False, name="taskq-idle")
    wait_registered(s.r, 1, [worker])
    catalog = s._catalog
    latencies: list[float] = []
    deadline = time.monotonic() + 60 + n * 0.2
    for i in range(n + 5):
        if time.monotonic() > deadline:
            break
        new = taskq_run.prepare(s.broker, catalog, s.tenant, RunInput(input={}, processor="noop"))
        t0 = time.perf_counter()
        taskq_run.create(s.broker, [new], tenant=s.tenant)
        seen = _wait_for(s, new.run_id, "running")
        if i >= 5:  # the first few warm the worker up
            latencies.append((seen - t0) * 1e6)
        _wait_for(s, new.run_id, "completed")
        time.sleep(IDLE_S)
    worker.stop()
    return _percentiles(latencies)


def _wait_for(s: Session, run_id: str, status: str) -> float:
    """Blocks on the run's event stream (no polling) until `status` is read;
    returns when (perf_counter)."""
    last = "0-0"
    while True:
        reply = s.r.xread({keys.run_events(run_id): last}, block=10_000)
        if not reply:
            raise TimeoutError(f"run {run_id} did not reach {status} within 10 s")
        for entry_id, fields in reply[0][1]:
            last = entry_id
            if fields.get("status") == status:
                return time.perf_counter()


def _rq(s: Session, worker_class: str, n: int) -> dict[str, float]:
    s.reset()
    worker = s.spawner.rq_worker(s.settings, worker_class, burst=False, name=f"rq-idle-{worker_class}")
    wait_registered(s.r, 1, [worker])
    latencies: list[float] = []
    deadline = time.monotonic() + 60 + n * 0.2
    for i in range(n + 5):
        if time.monotonic() > deadline:
            break
        job = s.rq_queue.enqueue(rqside.noop)
        if job.latest_result(timeout=10) is None:
            raise TimeoutError(f"RQ job {job.id} did not finish within 10 s")
        enqueued, started = s.r.hmget(f"rq:job:{job.id}", "enqueued_at", "started_at")
        if i >= 5:
            latencies.append((_ts(started) - _ts(enqueued)) * 1e6)
        time.sleep(IDLE_S)
    worker.stop()
    return _percentiles(latencies)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
