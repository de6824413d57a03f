"""Figure 3: worker throughput on no-op runs, 1 and 2 worker processes, each taskq
worker class vs bare RQ on the same class; and Redis commands per run.

The queue is filled first, then burst workers drain it. Throughput is the number of
runs over the span from the first start to the last end, as each system records
them (taskq: `started_ms`/`finished_ms` of the run; RQ: the job's `started_at`/
`ended_at`), so process start-up is not counted. Commands per run come from
`INFO commandstats` over the whole drain (those run inside Lua scripts included);
a smaller drain watched with MONITOR tells the commands sent by clients apart from
those run inside scripts."""

from __future__ import annotations

import resource
from datetime import datetime
from typing import Any

from taskq import keys

from .. import monitor
from ..report import Row
from ..session import Session

SYSTEMS = ("taskq", "RQ")


def run(s: Session) -> None:
    mode = s.mode
    throughput: dict[str, dict[int, float]] = {}
    commands: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    for worker_class, n in mode.worker_runs.items():
        for workers in mode.worker_counts:
            rates = {}
            for system in SYSTEMS:
                rate, cmds, worker_ms, redis_us = _drain(s, system, worker_class, workers, n)
                cpu[f"{system} {worker_class} x{workers}"] = {"worker_ms": worker_ms, "redis_us": redis_us}
                rates[system] = rate
                throughput.setdefault(f"{system} {worker_class}", {})[workers] = rate
                commands[f"{system} {worker_class} x{workers}"] = cmds
            s.results.add(Row(f"3 worker {worker_class} x{workers}", rates["taskq"], rates["RQ"], "runs/s",
                              "ratio >= 1.0", rates["taskq"] >= rates["RQ"]))  # fmt: skip
    s.results.details["worker_throughput"] = throughput
    s.results.details["commands_per_run"] = commands
    s.results.details["cpu_per_run"] = cpu
    for worker_class in mode.worker_runs:
        tq_cpu, rq_cpu = cpu[f"taskq {worker_class} x1"], cpu[f"RQ {worker_class} x1"]
        s.results.add(Row(f"3 worker CPU/run, {worker_class}", tq_cpu["worker_ms"], rq_cpu["worker_ms"], "ms",
                          "(cost of bookkeeping)", None,
                          "user+sys of the worker processes, start-up excluded"))  # fmt: skip
    tq_cpu, rq_cpu = cpu["taskq simple x1"], cpu["RQ simple x1"]
    s.results.add(Row("3 Redis CPU/run", tq_cpu["redis_us"], rq_cpu["redis_us"], "us", "(cost of bookkeeping)"))
    tq_cmds, rq_cmds = commands["taskq simple x1"], commands["RQ simple x1"]
    s.results.add(Row("3 Redis commands/run (all)", tq_cmds, rq_cmds, "cmds", "taskq <= 25", tq_cmds <= 25,
                      "INFO commandstats over a simple-worker drain, commands inside Lua counted"))  # fmt: skip
    watched = {system: _watch(s, system, mode.command_runs) for system in SYSTEMS}
    s.results.details["commands_watched"] = watched
    s.results.add(Row("3 client commands/run", watched["taskq"]["client_per_run"], watched["RQ"]["client_per_run"],
                      "cmds", "(round trips, orientation)", None,
                      f"taskq runs {watched['taskq']['lua_per_run']:.1f} more per run inside Lua"))  # fmt: skip


def _drain(s: Session, system: str, worker_class: str, workers: int, n: int) -> tuple[float, float, float, float]:
    """Fills the queue with n no-op runs, drains it with burst workers; returns
    (runs/s, Redis commands per run, worker CPU ms per run, Redis CPU us per run).
    Worker CPU is what the workers (and their work horses) used, less what the same
    workers use to start and stop on an empty queue."""
    s.reset()
    ids = s.fill_taskq(n) if system == "taskq" else s.fill_rq(n)
    s.r.config_resetstat()
    redis_cpu_before = s.redis_cpu_s()
    cpu_s = _burst(s, system, worker_class, workers, n)
    redis_cpu_s = s.redis_cpu_s() - redis_cpu_before
    calls = s.redis_server.command_calls()
    spans = _taskq_spans(s, ids) if system == "taskq" else _rq_spans(s, ids)
    if len(spans) != n:
        raise RuntimeError(f"{system} {worker_class}: {n - len(spans)} of {n} runs did not complete")
    first = min(start for start, _ in spans)
    last = max(end for _, end in spans)
    idle_cpu_s = _idle_cpu_s(s, system, worker_class)
    worker_ms = max(0.0, cpu_s - workers * idle_cpu_s) * 1000 / n
    return n / max(last - first, 1e-6), calls / n, worker_ms, redis_cpu_s * 1e6 / n


def _burst(s: Session, system: str, worker_class: str, workers: int, n: int) -> float:
    """Runs burst workers until the queue is empty; returns the CPU seconds they used."""
    start = s.spawner.taskq_worker if system == "taskq" else s.spawner.rq_worker
    before = _children_cpu_s()
    procs = [start(s.settings, worker_class, burst=True, name=f"{system}-{worker_class}-{i}") for i in range(workers)]
    for proc in procs:
        proc.wait(timeout_s=max(120.0, n / 20))
    return _children_cpu_s() - before


_idle: dict[tuple[str, str], float] = {}


def _idle_cpu_s(s: Session, system: str, worker_class: str) -> float:
    """CPU seconds one burst worker uses to start, find its queue empty and stop."""
    if (system, worker_class) not in _idle:
        s.reset()
        _idle[(system, worker_class)] = _burst(s, system, worker_class, 1, 0)
    return _idle[(system, worker_class)]


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
    """Drains n runs with one simple worker while MONITOR records every command."""
    s.reset()
    if system == "taskq":
        s.fill_taskq(n)
    else:
        s.fill_rq(n)
    start = s.spawner.taskq_worker if system == "taskq" else s.spawner.rq_worker
    seen = monitor.watch(s.r, lambda: start(s.settings, "simple", burst=True, name=f"{system}-watched").wait(120))
    return {
        "client_per_run": sum(seen["client"].values()) / n,
        "lua_per_run": sum(seen["lua"].values()) / n,
        "client_top": monitor.per(seen["client"], n),
        "lua_top": monitor.per(seen["lua"], n),
    }
