"""`taskq worker`: the assembly of the engine (taskq/engine/) from the settings.

One process carries up to `concurrency` runs at once: in threads (the default),
in pre-forked child processes (`pool="processes"`), and `async def` processors on
an event loop; it also advertises its processors, keeps every lease it holds,
reaps lost runs and promotes due retries. See taskq/engine/engine.py."""

from __future__ import annotations

import os

from .broker import Broker
from .engine import Engine
from .processor import load_apps

THREADS_CONCURRENCY = 32


def default_concurrency(pool: str) -> int:
    """32 threads (I/O-bound runs); one child process per CPU."""
    return THREADS_CONCURRENCY if pool == "threads" else os.cpu_count() or 1


def build(
    broker: Broker,
    *,
    queues: list[str] | None = None,
    name: str | None = None,
    concurrency: int | None = None,
    pool: str | None = None,
    max_runs_per_child: int | None = None,
) -> Engine:
    """A worker serving the processors of TASKQ_APP (and the built-in ones); what
    is not given comes from the settings."""
    settings = broker.settings
    processors = load_apps(settings.app)
    pool = pool or settings.pool
    concurrency = concurrency or settings.concurrency or default_concurrency(pool)
    queue_names = queues or sorted({p.queue for p in processors.values()})
    return Engine(
        broker,
        processors,
        queue_names,
        concurrency=concurrency,
        pool=pool,
        max_runs_per_child=settings.max_runs_per_child if max_runs_per_child is None else max_runs_per_child,
        name=name,
    )
