"""Celery, for the worker baselines: Redis broker and Redis result backend,
`task_acks_late=True` (at-least-once, as taskq's leases give), the same no-op and
50 ms I/O tasks as taskq's example app. Its worker is started as `celery worker`
would be (`python -m celery -A bench.celeryside worker --pool solo|threads`).

Each task returns the time it started; the backend's `date_done` is when it ended:
Celery's own timestamps, as taskq's `started_ms`/`finished_ms` and RQ's
`started_at`/`ended_at` are theirs."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

from celery import Celery

QUEUE = "bench_celery"

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_acks_late=True,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=4,  # Celery's default
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> float:
    return time.time()


@app.task(name="bench.io_wait")
def io_wait() -> float:
    started = time.time()
    time.sleep(0.05)
    return started


def point_at(url: str) -> None:
    """Makes this process's Celery client use the bench's Redis (broker and results)."""
    app.conf.broker_url = url
    app.conf.result_backend = url


def fill(n: int, task: str = "noop") -> list[str]:
    """n tasks on Celery's queue, through Celery's own `apply_async`."""
    fn = {"noop": noop, "io_wait": io_wait}[task]
    return [fn.apply_async().id for _ in range(n)]


def spans(client: Any, ids: list[str]) -> list[tuple[float, float]]:
    """(start, end) of each task that succeeded, from its stored result."""
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.get(f"celery-task-meta-{task_id}")
    out = []
    for raw in pipe.execute():
        if not raw:
            continue
        meta = json.loads(raw)
        if meta.get("status") == "SUCCESS":
            end = datetime.fromisoformat(meta["date_done"].replace("Z", "+00:00")).timestamp()
            out.append((float(meta["result"]), end))
    return out


def starts(client: Any, ids: list[str]) -> list[float | None]:
    """When each task started, as it returned it (None: no result yet)."""
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.get(f"celery-task-meta-{task_id}")
    out: list[float | None] = []
    for raw in pipe.execute():
        meta = json.loads(raw) if raw else {}
        out.append(float(meta["result"]) if meta.get("status") == "SUCCESS" else None)
    return out


def worker_args(pool: str, concurrency: int) -> list[str]:
    return [
        "-m",
        "celery",
        "-A",
        "bench.celeryside",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-Q",
        QUEUE,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "WARNING",
    ]
