"""`taskq info`: queues, workers and what waits, straight from Redis (like `rq info`)."""

from __future__ import annotations

import click

from ..broker import Broker
from ..errors import TaskqError
from ..overview import overview
from . import main, show


@main.command("info")
@click.option("--json", "as_json", is_flag=True, envvar="TASKQ_JSON", help="print JSON instead of tables")
def info(as_json: bool) -> None:
    """Queues (depth, oldest run), workers (concurrency, runs in flight), retries
    waiting, webhooks pending and dead-lettered. Reads REDIS_URL."""
    broker = Broker.from_env()
    try:
        view = overview(broker)
    except TaskqError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        broker.close()
    if as_json:
        show.emit_json(view.to_dict())
        return
    show.table("queues", ["queue", "depth", "oldest"], [(q.name, q.depth, show.age(q.oldest_age_s)) for q in view.queues])
    show.out.print()
    show.table(
        "workers",
        ["worker", "state", "queues", "concurrency", "in flight", "abandoned", "host", "pid", "heartbeat"],
        [
            (w.name, w.state, ",".join(w.queues), w.concurrency, w.in_flight, w.abandoned, w.hostname, w.pid,
             show.age(w.last_heartbeat_age_s))
            for w in view.workers
        ],
    )
    show.out.print()
    show.out.print(
        f"running {view.running}   retry-waiting {view.retry_waiting}   "
        f"webhooks pending {view.webhooks_pending}   dead-lettered {view.webhooks_dead}"
    )
