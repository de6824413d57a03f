"""Figure 1: HTTP enqueue through gunicorn, N concurrent clients in another process,
vs bare RQ `Queue.enqueue()` one by one from Python. Also, for orientation, taskq's
own Python `put()` one by one (the same write, without HTTP), and where the CPU goes
per enqueue: the gateway's processes (gunicorn master and workers), the load
generator and Redis; for RQ, the enqueuing process and Redis."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from taskq.client import put

from .. import rqside
from ..harness import API_KEY, ROOT, tree_cpu_s
from ..report import Row
from ..session import Session


def run(s: Session) -> None:
    """Each client setting is measured in `mode.rounds` rounds, each an RQ pass then a
    taskq pass, and the medians compared: on a shared machine the rate of either
    moves by tens of percent from one second to the next, and measuring RQ once
    before everything else would put that drift into the ratio."""
    mode = s.mode
    s.reset()
    url = s.gateway()
    _http(url, 2, 200, 10)  # warm up: imports, connections, the processor cache
    rq_rates: list[float] = []
    rq_cpus: list[dict[str, float]] = []
    cpu: dict[int, dict[str, float]] = {}
    for clients in mode.enqueue_clients:
        rates: list[float] = []
        non_202: dict[str, int] = {}
        for _ in range(mode.rounds):
            s.reset()
            rq_rate, rq_cpu = _one_by_one(s, lambda: s.rq_queue.enqueue(rqside.noop))
            rq_rates.append(rq_rate)
            rq_cpus.append(rq_cpu)
            s.reset()
            gateway0, redis0, loadgen0 = tree_cpu_s(s.gateway_pid), s.redis_cpu_s(), _children_cpu_s()
            out = _http(url, clients, mode.enqueue_count, mode.enqueue_max_s)
            n = out["requests"]
            cpu[clients] = {
                "gateway_ms": (tree_cpu_s(s.gateway_pid) - gateway0) * 1000 / n,
                "redis_ms": (s.redis_cpu_s() - redis0) * 1000 / n,
                "loadgen_ms": (_children_cpu_s() - loadgen0) * 1000 / n,
            }
            rates.append(rate := n / out["elapsed_s"])
            for k, v in out["statuses"].items():
                if k != "202":
                    non_202[k] = non_202.get(k, 0) + v
        rate, rq_rate = statistics.median(rates), statistics.median(rq_rates[-mode.rounds :])
        ratios = ", ".join(f"{t / r:.2f}" for t, r in zip(rates, rq_rates[-mode.rounds :], strict=False))
        note = f"median of {mode.rounds} alternating rounds (ratios {ratios}); last round p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms per request"
        if non_202:
            note += f"; non-202 answers: {non_202}"
        s.results.add(
            Row(f"1 HTTP enqueue, {clients} clients", rate, rq_rate, "runs/s", "ratio >= 1.0", rate >= rq_rate, note)
        )
        s.results.details.setdefault("http_enqueue_rounds", {})[clients] = {
            "taskq": rates,
            "rq": rq_rates[-mode.rounds :],
        }
    rq_rate = statistics.median(rq_rates)
    rq_cpu = {k: statistics.median(c[k] for c in rq_cpus) for k in rq_cpus[0]}
    busiest = cpu[max(cpu)]
    floor = _gateway_floor(s, url, max(cpu))
    s.results.add(
        Row(
            "1 CPU/enqueue: gateway vs RQ client",
            busiest["gateway_ms"],
            rq_cpu["client_ms"],
            "ms",
            "(where the time goes)",
            None,
            f"Redis CPU per enqueue: taskq {busiest['redis_ms']:.3f} ms, RQ {rq_cpu['redis_ms']:.3f} ms; "
            f"load generator {busiest['loadgen_ms']:.3f} ms per request; "
            f"the gateway's floor (GET /healthz) {floor['gateway_ms']:.3f} ms "
            f"at {floor['rate']:.0f} req/s",
        )
    )
    s.reset()
    put_rate, put_cpu = _one_by_one(s, lambda: put("noop", {}, broker=s.broker, tenant=s.tenant))
    s.results.add(
        Row(
            "1b Python put() one by one",
            put_rate,
            rq_rate,
            "runs/s",
            "(orientation)",
            None,
            f"client CPU {put_cpu['client_ms']:.2f} ms per put",
        )
    )
    s.results.details["http_enqueue"] = {
        "rq_enqueue_per_s": rq_rate,
        "rq_cpu": rq_cpu,
        "taskq_cpu_by_clients": cpu,
        "put_per_s": put_rate,
        "put_cpu": put_cpu,
        "healthz": floor,
    }


def _gateway_floor(s: Session, url: str, clients: int) -> dict[str, float]:
    """What gunicorn + Flask cost per request with no taskq work: GET /healthz."""
    gateway0 = tree_cpu_s(s.gateway_pid)
    out = _http(url, clients, s.mode.enqueue_count, s.mode.enqueue_max_s, "GET", "/healthz")
    n = out["requests"]
    return {"gateway_ms": (tree_cpu_s(s.gateway_pid) - gateway0) * 1000 / n, "rate": n / out["elapsed_s"]}


def _one_by_one(s: Session, enqueue: Callable[[], object]) -> tuple[float, dict[str, float]]:
    """Calls `enqueue` until the mode's count or time is reached; returns the rate and
    the CPU per call of this process and of Redis."""
    for _ in range(20):  # warm up
        enqueue()
    count, max_s = s.mode.enqueue_count, s.mode.enqueue_max_s
    done, deadline = 0, time.monotonic() + max_s
    cpu0, redis0, t0 = time.process_time(), s.redis_cpu_s(), time.perf_counter()
    while done < count and time.monotonic() < deadline:
        enqueue()
        done += 1
    elapsed = time.perf_counter() - t0
    cpu = {
        "client_ms": (time.process_time() - cpu0) * 1000 / done,
        "redis_ms": (s.redis_cpu_s() - redis0) * 1000 / done,
    }
    return done / elapsed, cpu


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _http(url: str, clients: int, count: int, max_s: float, *request: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.loadgen", url, API_KEY, str(clients), str(count), str(max_s), *request]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=max_s + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
