"""The `taskq` command: `taskq worker`, `taskq dispatcher`. Every option can also be
set by its environment variable."""

from __future__ import annotations

import logging
import os
import sys

import click

from .broker import Broker


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


@click.group()
def main() -> None:
    """taskq: async task runs on Redis and RQ."""


@main.command()
@click.option("--app", envvar="TASKQ_APP", default=None, help="comma-separated modules whose @task processors to serve")
@click.option("--queues", envvar="TASKQ_QUEUES", default=None, help="comma-separated queues (default: the processors')")
@click.option("--worker-class", envvar="TASKQ_WORKER_CLASS", type=click.Choice(["fork", "simple"]), default="fork")
@click.option("--name", envvar="TASKQ_WORKER_NAME", default=None)
@click.option("--burst", is_flag=True, envvar="TASKQ_BURST", help="stop when the queues are empty")
@click.option("--log-level", envvar="TASKQ_LOG_LEVEL", default="info")
def worker(app: str | None, queues: str | None, worker_class: str, name: str | None, burst: bool, log_level: str) -> None:
    """Run a worker: RQ's loop, plus taskq's leases, retries and reaper."""
    from . import worker as worker_module

    _logging(log_level)
    if os.getcwd() not in sys.path:  # TASKQ_APP modules are found from where the worker starts, as with `rq worker`
        sys.path.insert(0, os.getcwd())
    overrides = {"app": tuple(m.strip() for m in app.split(",") if m.strip())} if app else {}
    broker = Broker.from_env(**overrides)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    w = worker_module.build(broker, worker_class=worker_class, queues=queue_list, name=name)
    w.work(burst=burst, logging_level=log_level.upper())


@main.command()
@click.option("--log-level", envvar="TASKQ_LOG_LEVEL", default="info")
def dispatcher(log_level: str) -> None:
    """Deliver webhooks: sign, send, retry, record every attempt."""
    from .dispatcher import Dispatcher

    _logging(log_level)
    Dispatcher(Broker.from_env()).run_forever()


if __name__ == "__main__":
    main()
