"""Figure 4: pickup latency with an idle worker. taskq: from the run's `created_ms`
(set by the gateway as it writes the run) to its `started_ms` (set when the worker
claims it) — an idle worker often claims the run before its 202 has reached the
client; RQ: from the job's `enqueued_at` to its `started_at`. One run at a time, the
worker idle in between. taskq's times have millisecond resolution."""

from __future__ import annotations

import http.client
import json
import time
from datetime import datetime
from urllib.parse import urlsplit

from taskq import keys

from .. import rqside
from ..harness import API_KEY, wait_registered
from ..report import Row
from ..session import Session

IDLE_S = 0.005  # between runs, so the worker is back waiting on its queue


def run(s: Session) -> None:
    url = s.gateway()
    for worker_class in s.mode.latency_classes:
        tq = _taskq(s, url, worker_class, s.mode.latency_runs)
        bare = _rq(s, worker_class, s.mode.latency_runs)
        s.results.details[f"pickup_{worker_class}"] = {"taskq": tq, "RQ": bare}
        for pct, target in (("p50", 2.0), ("p99", 10.0)):
            s.results.add(Row(f"4 pickup {pct}, {worker_class} worker", tq[pct], bare[pct], "ms",
                              f"taskq <= {target:g} ms", tq[pct] <= target))  # fmt: skip


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    values_ms = sorted(values_ms)
    n = len(values_ms)
    return {"p50": values_ms[n // 2], "p99": values_ms[min(n - 1, int(n * 0.99))], "n": n, "max": values_ms[-1]}


def _taskq(s: Session, url: str, worker_class: str, n: int) -> dict[str, float]:
    s.reset()
    worker = s.spawner.taskq_worker(s.settings, worker_class, burst=False, name=f"taskq-idle-{worker_class}")
    wait_registered(s.r, 1, [worker])
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    body = json.dumps({"input": {}, "processor": "noop"})
    latencies: list[float] = []
    deadline = time.monotonic() + 60 + n * 0.2
    for i in range(n + 5):
        if time.monotonic() > deadline:
            break
        conn.request("POST", "/v1/tasks/runs", body=body, headers=headers)
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        if resp.status != 202:
            raise RuntimeError(f"POST /v1/tasks/runs answered {resp.status}: {payload}")
        run_id = payload["run_id"]
        _wait_completed(s, run_id)
        created_ms, started_ms = (int(v or 0) for v in s.r.hmget(keys.run(run_id), "created_ms", "started_ms"))
        if i >= 5:  # the first few warm the worker up
            latencies.append(started_ms - created_ms)
        time.sleep(IDLE_S)
    conn.close()
    worker.stop()
    return _percentiles(latencies)


def _wait_completed(s: Session, run_id: str) -> None:
    """Blocks on the run's event stream (no polling) until it has ended."""
    last = "0-0"
    while True:
        reply = s.r.xread({keys.run_events(run_id): last}, block=10_000)
        if not reply:
            raise TimeoutError(f"run {run_id} did not end within 10 s")
        for entry_id, fields in reply[0][1]:
            last = entry_id
            if fields.get("status") in ("completed", "failed", "cancelled"):
                return


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
            latencies.append((_ts(started) - _ts(enqueued)) * 1000)
        time.sleep(IDLE_S)
    worker.stop()
    return _percentiles(latencies)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
