"""The server commands: `taskq worker`, `taskq dispatcher`."""

from __future__ import annotations

import logging
import os
import sys

import click

from ..broker import Broker
from . import main


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


@main.command()
@click.option("--app", envvar="TASKQ_APP", default=None, help="comma-separated modules whose @task processors to serve")
@click.option("--queues", envvar="TASKQ_QUEUES", default=None, help="comma-separated queues (default: the processors')")
@click.option("--concurrency", "-c", envvar="TASKQ_CONCURRENCY", type=click.IntRange(min=0), default=None,
              help="runs this process holds at once (default: 32 threads, or one child per CPU)")
@click.option("--pool", envvar="TASKQ_POOL", type=click.Choice(["threads", "processes"]), default=None,
              help="threads (default), or processes: pre-forked children for CPU-bound or leaky code")
@click.option("--max-runs-per-child", envvar="TASKQ_MAX_RUNS_PER_CHILD", type=click.IntRange(min=0), default=None,
              help="processes pool: replace a child after this many runs (0 = never)")
@click.option("--name", envvar="TASKQ_WORKER_NAME", default=None)
@click.option("--burst", is_flag=True, envvar="TASKQ_BURST", help="stop when no run is queued, running or due for a retry")
@click.option("--log-level", envvar="TASKQ_LOG_LEVEL", default="info")
def worker(
    app: str | None, queues: str | None, concurrency: int | None, pool: str | None, max_runs_per_child: int | None,
    name: str | None, burst: bool, log_level: str,
) -> None:  # fmt: skip
    """Run a worker: many runs at once (threads, child processes, asyncio), with
    leases, retries and the reaper."""
    from .. import worker as worker_module

    _logging(log_level)
    if os.getcwd() not in sys.path:  # TASKQ_APP modules are found from where the worker starts, as with `rq worker`
        sys.path.insert(0, os.getcwd())
    overrides = {"app": tuple(m.strip() for m in app.split(",") if m.strip())} if app else {}
    broker = Broker.from_env(**overrides)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    engine = worker_module.build(broker, queues=queue_list, name=name, concurrency=concurrency, pool=pool,
                                 max_runs_per_child=max_runs_per_child)  # fmt: skip
    engine.work(burst=burst)
    if engine.restart:
        # Too many threads were abandoned in C calls: start afresh, as the same command.
        logging.getLogger("taskq.worker").warning("restarting: %s", " ".join(sys.argv))
        os.execv(sys.executable, [sys.executable, "-m", "taskq.cli", *sys.argv[1:]])


@main.command()
@click.option("--log-level", envvar="TASKQ_LOG_LEVEL", default="info")
def dispatcher(log_level: str) -> None:
    """Deliver webhooks: sign, send, retry, record every attempt."""
    from ..dispatcher import Dispatcher

    _logging(log_level)
    Dispatcher(Broker.from_env()).run_forever()
