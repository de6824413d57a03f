"""Figure 3: workers. taskq's `taskq worker` as the Procfile runs it (threads
pool, concurrency 32) against bare RQ (SimpleWorker, one job at a time: RQ's
fastest) and Celery 5 (Redis broker and result backend, acks_late; `--pool solo`
for no-op runs, `--pool threads --concurrency 32` for I/O runs):

- no-op runs/s with 1 and 2 worker processes;
- 50 ms I/O runs/s (a blocking `time.sleep(0.05)`), one process at concurrency 32;
- 50 ms `async def` runs/s (`await asyncio.sleep(0.05)`), one process at
  concurrency 256 (taskq only: Celery has no asyncio pool);
- Redis commands per run (INFO commandstats, commands inside Lua counted), at
  concurrency >= 8; worker CPU and Redis CPU per run; the worker's peak RSS at
  concurrency 32 against concurrency 1.

Same method for all: the queue is filled first, then workers drain it. The rate
is the steady state: the runs that ended between the 10th and the 90th percentile
of end times, over that span, as each system records them (taskq: `finished_ms`;
RQ: `ended_at`; Celery: its result's `date_done`), so neither process start-up nor
the tail as the queue runs dry is counted. The whole drain (first start to last
end) is kept in the details as `whole_rate`. A smaller drain watched with MONITOR tells the
commands sent by clients apart from those run inside scripts."""

from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from taskq import keys

from .. import monitor
from ..harness import Process
from ..report import Row
from ..session import Session

try:  # Celery comes with the bench's extra: pip install -e '.[bench]'
    from .. import celeryside
except ImportError:  # without it, the Celery column stays empty
    celeryside = None  # type: ignore[assignment]

IO_CONCURRENCY = 32
ASYNC_CONCURRENCY = 256


@dataclass
class Drain:
    rate: float  # steady state: the middle 80 % of ends
    commands: float  # Redis commands per run, all
    cpu_ms: float  # worker CPU per run, start-up included
    redis_us: float  # Redis CPU per run
    rss_kb: int  # the worker's peak RSS (its children's too)
    whole_rate: float  # first start to last end


def run(s: Session) -> None:
    mode = s.mode
    _configure_celery(s)
    throughput: dict[str, dict[int, float]] = {}
    drains: dict[str, Drain | None] = {}
    for workers in mode.worker_counts:
        tq = drains[f"taskq noop x{workers}"] = drain_taskq(s, "noop", mode.worker_runs, workers)
        rq_ = drains[f"RQ noop x{workers}"] = _rq(s, mode.worker_runs, workers)
        cel = drains[f"Celery noop x{workers}"] = _celery(s, "noop", mode.worker_runs, workers, "solo", 1)
        for label, d in (("taskq threads", tq), ("RQ simple", rq_), ("Celery solo", cel)):
            if d is not None:
                throughput.setdefault(label, {})[workers] = d.rate
        s.results.add(
            Row(
                f"3 no-op runs/s, {workers} process(es)",
                tq.rate,
                rq_.rate,
                "runs/s",
                ">= 1.0x Celery solo",
                _beats(tq, cel),
                _no_celery(cel),
                celery=_rate(cel),
            )
        )
    tq_io = drains["taskq io c32"] = drain_taskq(s, "io_wait", mode.io_runs, 1, IO_CONCURRENCY)
    cel_io = drains["Celery io c32"] = _celery(s, "io_wait", mode.io_runs, 1, "threads", IO_CONCURRENCY)
    met_io = tq_io.rate >= 500 and _beats(tq_io, cel_io) is not False
    s.results.add(
        Row(
            "3 50 ms I/O runs/s, 1 process, c=32",
            tq_io.rate,
            None,
            "runs/s",
            ">= 500 and >= 1.0x Celery threads",
            met_io,
            _no_celery(cel_io),
            celery=_rate(cel_io),
        )
    )
    tq_aio = drains["taskq async c256"] = drain_taskq(s, "aio_wait", mode.async_runs, 1, ASYNC_CONCURRENCY)
    s.results.add(
        Row(
            "3 50 ms async runs/s, 1 process, c=256",
            tq_aio.rate,
            None,
            "runs/s",
            ">= 1,000",
            tq_aio.rate >= 1000,
            "Celery has no asyncio pool",
        )
    )
    tq1, rq1, cel1 = drains["taskq noop x1"], drains["RQ noop x1"], drains["Celery noop x1"]
    assert tq1 is not None and rq1 is not None  # only Celery's drains may be missing
    s.results.add(
        Row(
            "3 Redis commands/run, no-op, c=32",
            tq1.commands,
            rq1.commands,
            "cmds",
            "taskq <= 12",
            tq1.commands <= 12,
            "INFO commandstats over the drain, commands inside Lua counted",
            celery=cel1.commands if cel1 else None,
        )
    )
    s.results.add(
        Row(
            "3 Redis commands/run, I/O, c=32",
            tq_io.commands,
            None,
            "cmds",
            "taskq <= 12",
            tq_io.commands <= 12,
            celery=cel_io.commands if cel_io else None,
        )
    )
    s.results.add(
        Row(
            "3 worker CPU/run, no-op",
            tq1.cpu_ms,
            rq1.cpu_ms,
            "ms",
            "(cost of bookkeeping)",
            None,
            "user+sys of the worker processes, start-up included",
            celery=cel1.cpu_ms if cel1 else None,
        )
    )
    s.results.add(
        Row(
            "3 Redis CPU/run, no-op",
            tq1.redis_us,
            rq1.redis_us,
            "us",
            "(cost of bookkeeping)",
            celery=cel1.redis_us if cel1 else None,
        )
    )
    tq_rss1 = drains["taskq io c1"] = drain_taskq(s, "io_wait", mode.rss_runs, 1, 1)
    ratio = tq_io.rss_kb / max(tq_rss1.rss_kb, 1)
    s.results.add(
        Row(
            "3 worker RSS, threads c=32",
            tq_io.rss_kb / 1024,
            None,
            "MiB",
            "<= 2x c=1",
            ratio <= 2,
            f"c=1: {tq_rss1.rss_kb / 1024:.1f} MiB ({ratio:.2f}x)",
            celery=cel_io.rss_kb / 1024 if cel_io else None,
        )
    )
    s.results.details["worker_throughput"] = throughput
    s.results.details["drains"] = {k: vars(v) for k, v in drains.items() if v is not None}
    watched = {system: _watch(s, system, mode.command_runs) for system in ("taskq", "RQ")}
    s.results.details["commands_watched"] = watched
    s.results.add(
        Row(
            "3 client commands/run",
            watched["taskq"]["client_per_run"],
            watched["RQ"]["client_per_run"],
            "cmds",
            "(round trips, orientation)",
            None,
            f"taskq runs {watched['taskq']['lua_per_run']:.1f} more per run inside Lua",
        )
    )


def _configure_celery(s: Session) -> None:
    if celeryside is not None:
        celeryside.point_at(s.settings.redis_url)


def _rate(d: Drain | None) -> float | None:
    return d.rate if d is not None else None


def _beats(tq: Drain, celery: Drain | None) -> bool | None:
    return None if celery is None else tq.rate >= celery.rate


def _no_celery(d: Drain | None) -> str:
    return "" if d is not None else "Celery not installed: pip install -e '.[bench]'"


def drain_taskq(s: Session, processor: str, n: int, workers: int, concurrency: int | None = None) -> Drain:
    """n runs of `processor` queued first, then drained by `workers` burst workers
    (s.settings: the example app, and any other `s.serving` names)."""
    s.reset()
    ids = s.fill_taskq(n, processor=processor)

    def start(i: int) -> Process:
        return s.spawner.taskq_worker(s.settings, burst=True, name=f"taskq-{processor}-{i}", concurrency=concurrency)

    return _measure(s, n, workers, start, lambda: _taskq_spans(s, ids), burst=True)


def _rq(s: Session, n: int, workers: int) -> Drain:
    s.reset()
    ids = s.fill_rq(n)

    def start(i: int) -> Process:
        return s.spawner.rq_worker(s.settings, "simple", burst=True, name=f"rq-{i}")

    return _measure(s, n, workers, start, lambda: _rq_spans(s, ids), burst=True)


def _celery(s: Session, task: str, n: int, workers: int, pool: str, concurrency: int) -> Drain | None:
    if celeryside is None:
        return None
    s.reset()
    ids = celeryside.fill(n, task)

    def start(i: int) -> Process:
        return s.spawner.celery_worker(s.settings, pool, concurrency, name=f"celery-{task}-{i}")

    side = celeryside
    return _measure(s, n, workers, start, lambda: side.spans(s.r, ids), burst=False)


def _measure(s: Session, n: int, workers: int, start: Any, spans_of: Any, *, burst: bool) -> Drain:
    s.r.config_resetstat()
    redis_before = s.redis_cpu_s()
    cpu_before = _children_cpu_s()
    procs = [start(i) for i in range(workers)]
    peak = _PeakRss([p.proc.pid for p in procs])
    deadline = time.monotonic() + max(120.0, n / 20)
    if burst:
        for proc in procs:
            proc.wait(timeout_s=max(1.0, deadline - time.monotonic()))
    else:  # Celery has no burst mode: stop it once every result is in
        while len(spans_of()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in procs:
            proc.stop()
    peak.stop()
    calls = s.redis_server.command_calls()
    redis_cpu = s.redis_cpu_s() - redis_before
    cpu = _children_cpu_s() - cpu_before
    spans = spans_of()
    if len(spans) != n:
        raise RuntimeError(f"{n - len(spans)} of {n} runs did not complete")
    first = min(a for a, _ in spans)
    last = max(b for _, b in spans)
    whole = n / max(last - first, 1e-6)
    return Drain(_steady(spans) or whole, calls / n, cpu * 1000 / n, redis_cpu * 1e6 / n, peak.kb, whole)


def _steady(spans: list[tuple[float, float]]) -> float | None:
    """Runs per second between the 10th and 90th percentile of end times."""
    ends = sorted(b for _, b in spans)
    lo, hi = len(ends) // 10, len(ends) * 9 // 10
    if hi - lo < 20 or ends[hi] <= ends[lo]:
        return None
    return (hi - lo) / (ends[hi] - ends[lo])


class _PeakRss(threading.Thread):
    """Samples the RSS of some processes and their children every 20 ms."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.kb = 0
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.wait(0.02):
            self.kb = max(self.kb, sum(_rss_kb(p) for pid in self.pids for p in [pid, *_children(pid)]))

    def stop(self) -> None:
        self._halt.set()
        self.join(1)


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _taskq_spans(s: Session, ids: list[str]) -> list[tuple[float, float]]:
    pipe = s.r.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(keys.run(run_id), "status", "started_ms", "finished_ms")
    return [(int(a) / 1000, int(b) / 1000) for st, a, b in pipe.execute() if st == "completed"]


def _rq_spans(s: Session, ids: list[str]) -> list[tuple[float, float]]:
    pipe = s.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"rq:job:{job_id}", "status", "started_at", "ended_at")
    return [(_ts(a), _ts(b)) for st, a, b in pipe.execute() if st == "finished"]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _watch(s: Session, system: str, n: int) -> dict[str, Any]:
    """Drains n no-op runs with one worker while MONITOR records every command."""
    s.reset()
    if system == "taskq":
        s.fill_taskq(n)
        seen = monitor.watch(
            s.r, lambda: s.spawner.taskq_worker(s.settings, burst=True, name="taskq-watched").wait(120)
        )
    else:
        s.fill_rq(n)
        seen = monitor.watch(
            s.r, lambda: s.spawner.rq_worker(s.settings, "simple", burst=True, name="rq-watched").wait(120)
        )
    return {
        "client_per_run": sum(seen["client"].values()) / n,
        "lua_per_run": sum(seen["lua"].values()) / n,
        "client_top": monitor.per(seen["client"], n),
        "lua_top": monitor.per(seen["lua"], n),
    }
