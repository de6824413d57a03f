"""Figure 8: fairness. How long a second tenant's runs wait behind another tenant's
backlog, on one worker process at concurrency 8, with runs of 50 ms (a blocking
sleep, as workers.app's `io_wait`):

- tenant A's backlog (`Mode.fair_backlog` runs) is queued first, then the worker
  starts;
- 1 s after the worker started its first run, tenant B makes `fair_runs` runs, one
  every `fair_gap_s`;
- the worker is stopped once every one of B's runs has started.

A run's queue wait is its start minus its creation, each system's own timestamps:
taskq `started_ms - created_ms` (Redis's clock, both written by scripts); RQ
`started_at - enqueued_at`; Celery keeps no creation time, so the bench notes the
time just before `apply_async`, and the task returns the time it started (one
machine, one clock).

The peers at the same concurrency, each on one queue, first in first out: Celery 5
(`--pool threads --concurrency 8`, prefetch 4, its default) and 8 RQ `SimpleWorker`
processes (RQ runs one job per process; SimpleWorker is its fastest class, a fork per
job would add ~15 ms to each). Neither has tenants, so B's runs wait for the backlog
ahead of them: that wait is measured, not computed. In taskq, lanes take turns, so B's
run waits for a slot to free and at most one of A's runs to go before it.

Also counted, for orientation: how many of A's runs started before B's last run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from taskq import keys
from taskq.ids import tenant_of

from .. import rqside
from ..harness import Process, wait_until
from ..report import Row
from ..session import Mode, Session

try:  # Celery comes with the bench's extra: pip install -e '.[bench]'
    from .. import celeryside
except ImportError:  # without it, the Celery column stays empty
    celeryside = None  # type: ignore[assignment]

CONCURRENCY = 8
RUN_MS = 50  # one run-length: workers.app's io_wait, rqside.io_wait, celeryside.io_wait
LEAD_S = 1.0  # B's first run, after the worker started its first
TARGET_MS = 2 * RUN_MS
TENANT_B = tenant_of("bench-tenant-b")

T = TypeVar("T")


@dataclass
class Fairness:
    waits_ms: list[float]  # B's queue waits, in the order B made its runs
    ahead: int  # A's runs that started before B's last run started
    backlog: int  # A's runs queued first

    def pct(self, q: float) -> float:
        values = sorted(self.waits_ms)
        return values[min(len(values) - 1, int(len(values) * q))]


def run(s: Session) -> None:
    tq = _taskq(s)
    bare = _rq(s)
    cel = _celery(s)
    s.results.details["fairness"] = {
        name: vars(f) for name, f in (("taskq", tq), ("RQ", bare), ("Celery", cel)) if f is not None
    }
    peers = (
        f"one worker at c={CONCURRENCY} each; RQ: {CONCURRENCY} SimpleWorker processes, Celery: threads pool, "
        "each one FIFO queue"
    )
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        s.results.add(
            Row(
                f"8 tenant B's wait behind A's backlog, {label}",
                tq.pct(q),
                bare.pct(q),
                "ms",
                f"taskq p99 <= 2 run-lengths ({TARGET_MS} ms)" if label == "p99" else "(orientation)",
                tq.pct(q) <= TARGET_MS if label == "p99" else None,
                f"{s.mode.fair_runs} runs of B, one every {s.mode.fair_gap_s:g} s, behind {s.mode.fair_backlog:,} of "
                f"A's, {RUN_MS} ms each; {peers}"
                if label == "p50"
                else _no_celery(cel),
                celery=cel.pct(q) if cel else None,
            )
        )
    s.results.add(
        Row(
            "8 A's runs started before B's last",
            tq.ahead,
            bare.ahead,
            "runs",
            "(orientation)",
            None,
            f"of {s.mode.fair_backlog:,} queued first",
            celery=cel.ahead if cel else None,
        )
    )


def _no_celery(f: Fairness | None) -> str:
    return "" if f is not None else "Celery not installed: pip install -e '.[bench]'"


def _backlog_s(mode: Mode) -> float:
    """Time enough for a FIFO worker to get through the backlog, and then some."""
    return mode.fair_backlog * RUN_MS / 1000 / CONCURRENCY * 3 + mode.fair_runs * mode.fair_gap_s + 60


def _when_running(procs: list[Process], check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Waits for `check`, failing at once if a worker exits."""

    def done() -> bool:
        for proc in procs:
            if not proc.running():
                raise RuntimeError(f"worker exited early:\n{proc.output()[-3000:]}")
        return check()

    wait_until(done, timeout_s, what, interval_s=0.005)


def _spaced(mode: Mode, make: Callable[[], T]) -> list[T]:
    """B's runs: `make()` once every `fair_gap_s`, starting LEAD_S from now."""
    time.sleep(LEAD_S)
    began = time.monotonic()
    made = []
    for i in range(mode.fair_runs):
        time.sleep(max(0.0, began + i * mode.fair_gap_s - time.monotonic()))
        made.append(make())
    return made


def _taskq(s: Session) -> Fairness:
    mode = s.mode
    s.reset()
    backlog = s.fill_taskq(mode.fair_backlog, processor="io_wait")
    worker = s.spawner.taskq_worker(s.settings, burst=False, name="taskq-fair", concurrency=CONCURRENCY)

    def started(run_ids: list[str]) -> list[str | None]:
        pipe = s.r.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(keys.run(run_id), "started_ms")
        return pipe.execute()

    _when_running([worker], lambda: started(backlog[:1])[0] is not None, 60, "taskq's first run")
    theirs = _spaced(mode, lambda: s.fill_taskq(1, processor="io_wait", tenant=TENANT_B)[0])
    _when_running([worker], lambda: None not in started(theirs), _backlog_s(mode), "B's runs start (taskq)")
    worker.stop()
    pipe = s.r.pipeline(transaction=False)
    for run_id in theirs:
        pipe.hmget(keys.run(run_id), "created_ms", "started_ms")
    b = [(int(c), int(st)) for c, st in pipe.execute()]
    last = max(st for _, st in b)
    ahead = sum(1 for st in started(backlog) if st is not None and int(st) < last)
    return Fairness([float(st - c) for c, st in b], ahead, len(backlog))


def _rq(s: Session) -> Fairness:
    mode = s.mode
    s.reset()
    backlog = s.fill_rq(mode.fair_backlog, func=rqside.io_wait)
    procs = [s.spawner.rq_worker(s.settings, "simple", burst=False, name=f"rq-fair-{i}") for i in range(CONCURRENCY)]

    def started(job_ids: list[str]) -> list[str]:
        pipe = s.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(f"rq:job:{job_id}", "started_at")
        return [v or "" for v in pipe.execute()]

    _when_running(procs, lambda: bool(started(backlog[:1])[0]), 60, "RQ's first job")
    theirs = _spaced(mode, lambda: s.rq_queue.enqueue(rqside.io_wait).id)
    _when_running(procs, lambda: "" not in started(theirs), _backlog_s(mode), "B's jobs start (RQ)")
    _stop(procs)
    pipe = s.r.pipeline(transaction=False)
    for job_id in theirs:
        pipe.hmget(f"rq:job:{job_id}", "enqueued_at", "started_at")
    b = [(_ts(e), _ts(st)) for e, st in pipe.execute()]
    last = max(st for _, st in b)
    ahead = sum(1 for st in started(backlog) if st and _ts(st) < last)
    return Fairness([(st - e) * 1000 for e, st in b], ahead, len(backlog))


def _celery(s: Session) -> Fairness | None:
    if celeryside is None:
        return None
    side: Any = celeryside
    mode = s.mode
    s.reset()
    side.point_at(s.settings.redis_url)
    backlog = side.fill(mode.fair_backlog, "io_wait")
    worker = s.spawner.celery_worker(s.settings, "threads", CONCURRENCY, name="celery-fair")
    # (a task's start is known once it has ended: its result holds it)
    _when_running([worker], lambda: side.starts(s.r, backlog[:1])[0] is not None, 60, "Celery's first task")

    def make() -> tuple[float, str]:
        made_at = time.time()
        return made_at, side.io_wait.apply_async().id

    theirs = _spaced(mode, make)
    ids = [task_id for _, task_id in theirs]
    _when_running([worker], lambda: None not in side.starts(s.r, ids), _backlog_s(mode), "B's tasks (Celery)")
    worker.stop()
    b = list(zip([made for made, _ in theirs], side.starts(s.r, ids), strict=True))
    last = max(st for _, st in b)
    ahead = sum(1 for st in side.starts(s.r, backlog) if st is not None and st < last)
    return Fairness([(st - made) * 1000 for made, st in b], ahead, len(backlog))


def _stop(procs: list[Process]) -> None:
    """SIGTERM to every worker first, then wait for each: they finish their jobs together."""
    for proc in procs:
        if proc.running():
            proc.proc.terminate()
    for proc in procs:
        proc.stop()


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
