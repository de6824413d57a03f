"""Figure 6: Redis bytes per finished small run. n no-op runs are made and run to
the end by two simple workers (and, for taskq, their event streams, folded into their
records, have gone: bench/memory.py); then `MEMORY USAGE` is summed over each run's keys
(a sample), and `used_memory` after minus before is divided by n (which also
counts shared structures: queues, registries). RQ: a job kept with its result
(RQ's default result_ttl), keys `rq:job:{id}` and `rq:results:{id}`."""

from __future__ import annotations

import random
from collections.abc import Callable

from taskq import keys

from ..memory import settle
from ..report import Row
from ..session import Session

SAMPLE = 200


def run(s: Session) -> None:
    n = s.mode.memory_runs
    per_key = {}
    delta = {}
    for system in ("taskq", "RQ"):
        s.reset()
        before = int(s.r.info("memory")["used_memory"])
        ids = s.fill_taskq(n) if system == "taskq" else s.fill_rq(n)
        start = s.spawner.taskq_worker if system == "taskq" else s.spawner.rq_worker
        pool = "threads" if system == "taskq" else "simple"
        procs = [start(s.settings, pool, burst=True, name=f"{system}-mem-{i}") for i in range(2)]
        for proc in procs:
            proc.wait(timeout_s=max(120.0, n / 20))
        if system == "taskq":
            settle(s.broker, ids)  # a finished run's stream goes a few seconds after it ends
        after = int(s.r.info("memory")["used_memory"])
        delta[system] = (after - before) / n
        per_key[system] = _usage(s, system, random.sample(ids, min(SAMPLE, n)))
    s.results.details["memory"] = {"used_memory_delta_per_run": delta, "memory_usage_per_run": per_key}
    tq, bare = per_key["taskq"]["total"], per_key["RQ"]["total"]
    s.results.add(
        Row(
            "6 bytes/finished run (MEMORY USAGE)",
            tq,
            bare,
            "B",
            "taskq <= 1,536 B",
            tq <= 1536,
            "taskq keys: " + ", ".join(f"{k} {v:.0f} B" for k, v in per_key["taskq"].items() if k != "total"),
        )
    )
    s.results.add(
        Row(
            "6 bytes/finished run (used_memory)",
            delta["taskq"],
            delta["RQ"],
            "B",
            "taskq <= 1,536 B",
            delta["taskq"] <= 1536,
        )
    )


def _usage(s: Session, system: str, ids: list[str]) -> dict[str, float]:
    names: dict[str, Callable[[str], str]]
    if system == "taskq":
        names = {"run hash": keys.run, "run events": keys.run_events, "run deliveries": keys.run_deliveries}
    else:
        names = {"rq job": lambda i: f"rq:job:{i}", "rq result": lambda i: f"rq:results:{i}"}
    totals = {}
    for label, key_of in names.items():
        pipe = s.r.pipeline(transaction=False)
        for i in ids:
            pipe.memory_usage(key_of(i), samples=0)
        totals[label] = sum(v or 0 for v in pipe.execute()) / len(ids)
    totals["total"] = sum(totals.values())
    return totals
