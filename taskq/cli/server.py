"""The server commands: `taskq worker`, `taskq dispatcher`."""

from __future__ import annotations

import logging
import os
import sys

import click

from .. import __version__
from ..broker import Broker
from ..processor import Processor, load_apps
from ..settings import POOLS
from . import show

BUILT_IN = "taskq.processors"  # the package of the processors every worker serves


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


@click.command()
@click.option("--app", envvar="TASKQ_APP", default=None, help="comma-separated modules whose @task processors to serve")
@click.option("--queues", envvar="TASKQ_QUEUES", default=None, help="comma-separated queues (default: the processors')")
@click.option(
    "--concurrency",
    "-c",
    envvar="TASKQ_CONCURRENCY",
    type=click.IntRange(min=0),
    default=None,
    help="runs this process holds at once (default: 32 threads, or one child per CPU)",
)
@click.option(
    "--pool",
    envvar="TASKQ_POOL",
    type=click.Choice(POOLS),
    default=None,
    help="threads (default), or processes: pre-forked children for CPU-bound or leaky code",
)
@click.option(
    "--max-runs-per-child",
    envvar="TASKQ_MAX_RUNS_PER_CHILD",
    type=click.IntRange(min=0),
    default=None,
    help="processes pool: replace a child after this many runs (0 = never)",
)
@click.option("--name", envvar="TASKQ_WORKER_NAME", default=None)
@click.option(
    "--burst", is_flag=True, envvar="TASKQ_BURST", help="stop when no run is queued, running or due for a retry"
)
@click.option("--log-level", envvar="TASKQ_LOG_LEVEL", default="info")
def worker(
    app: str | None,
    queues: str | None,
    concurrency: int | None,
    pool: str | None,
    max_runs_per_child: int | None,
    name: str | None,
    burst: bool,
    log_level: str,
) -> None:
    """Run a worker: many runs at once (threads, child processes, asyncio), with
    leases, retries and the reaper."""
    from .. import worker as worker_module

    _logging(log_level)
    if os.getcwd() not in sys.path:  # TASKQ_APP modules are found from where the worker starts, as with `rq worker`
        sys.path.insert(0, os.getcwd())
    overrides = {"app": tuple(m.strip() for m in app.split(",") if m.strip())} if app else {}
    broker = Broker.from_env(**overrides)
    processors = _load(broker.settings.app)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    engine = worker_module.build(
        broker, queues=queue_list, name=name, concurrency=concurrency, pool=pool, max_runs_per_child=max_runs_per_child
    )
    _log_start("worker", broker, f"app {', '.join(broker.settings.app)}; serving {_names(processors)}")
    engine.work(burst=burst)
    if engine.restart:
        # Too many threads were abandoned in C calls: start afresh, as the same command.
        logging.getLogger("taskq.worker").warning("restarting: %s", " ".join(sys.argv))
        os.execv(sys.executable, [sys.executable, "-m", "taskq.cli", *sys.argv[1:]])


@click.command()
@click.option("--log-level", envvar="TASKQ_LOG_LEVEL", default="info")
def dispatcher(log_level: str) -> None:
    """Deliver webhooks: sign, send, retry, record every attempt."""
    from ..webhooks.dispatcher import Dispatcher

    _logging(log_level)
    broker = Broker.from_env()
    _log_start("dispatcher", broker, "delivering webhooks")
    Dispatcher(broker).run_forever()


def _load(modules: tuple[str, ...]) -> dict[str, Processor]:
    """The processors of the app modules, or a one-line error: a worker with no app
    would serve only the built-in processors, which is never what was meant."""
    if not modules:
        raise click.ClickException(
            "no app to serve: set TASKQ_APP (or --app) to the comma-separated modules whose @task processors "
            "this worker runs, e.g. TASKQ_APP=myapp"
        )
    try:
        return load_apps(modules)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not any(m == missing or m.startswith(missing + ".") for m in modules):
            raise  # a module the app itself imports: its traceback says where
        raise click.ClickException(
            f"cannot import the app module {missing!r} (TASKQ_APP / --app): it is looked for in the worker's "
            f"working directory ({os.getcwd()}) and on PYTHONPATH"
        ) from None


def _names(processors: dict[str, Processor]) -> str:
    built_in = sorted(n for n, p in processors.items() if p.func.__module__.startswith(BUILT_IN))
    own = sorted(n for n in processors if n not in built_in)
    return f"{', '.join(own) or 'no processors of its own'} (built in: {', '.join(built_in)})"


def _log_start(what: str, broker: Broker, detail: str) -> None:
    logging.getLogger(f"taskq.{what}").info(
        "taskq %s %s: %s; Redis %s", __version__, what, detail, show.redis_location(broker.settings.redis_url)
    )
