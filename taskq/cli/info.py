"""`taskq info`: queues, workers and what waits, straight from Redis (like `rq info`)."""

from __future__ import annotations

import os

import click

from ..broker import Broker
from ..capacity import human_bytes
from ..clock import iso
from ..errors import TaskqError
from ..overview import overview
from . import show


@click.command("info")
@click.option("--json", "as_json", is_flag=True, envvar="TASKQ_JSON", help="print JSON instead of tables")
def info(as_json: bool) -> None:
    """Queues (depth, oldest run), workers (concurrency, runs in flight), retries
    waiting, webhooks pending and dead-lettered, and Redis's memory against its
    maxmemory. Reads REDIS_URL, and says which Redis it read (on stderr) before the
    tables."""
    try:
        broker = Broker.from_env()
    except ValueError as exc:  # a REDIS_URL redis-py cannot parse
        raise click.ClickException(f"REDIS_URL: {exc}") from None
    where = show.redis_location(broker.settings.redis_url)
    try:
        view = overview(broker)
    except TaskqError as exc:
        reason = str(exc.__cause__ or exc.message)
        raise click.ClickException(f"cannot read Redis at {where} ({_source()}): {reason}") from None
    finally:
        broker.close()
    shape = f", a cluster of {view.masters} masters, {view.partitions} partitions" if view.cluster else ""
    show.err.print(f"Redis {where} ({_source()}){shape}", markup=False)
    if as_json:
        show.emit_json(view.to_dict())
        return
    show.table(
        "queues", ["queue", "depth", "oldest"], [(q.name, q.depth, show.age(q.oldest_age_s)) for q in view.queues]
    )
    show.out.print()
    show.table(
        "workers",
        ["worker", "state", "queues", "serves", "concurrency", "in flight", "abandoned", "host", "pid", "heartbeat"],
        [
            (
                w.name,
                w.state,
                ",".join(w.queues),
                ",".join(w.processors),
                w.concurrency,
                w.in_flight,
                w.abandoned,
                w.hostname,
                w.pid,
                show.age(w.last_heartbeat_age_s),
            )
            for w in view.workers
        ],
    )
    show.out.print()
    if view.limits:
        show.table(
            "limits",
            ["limit", "in flight", "concurrency", "rate", "started/min", "last min", "runs waiting", "paused until"],
            [
                (
                    li.id,
                    li.in_flight,
                    li.concurrency or "-",
                    li.rate or "-",
                    li.started_this_minute,
                    li.started_last_minute,
                    li.runs_waiting,
                    iso(li.paused_until_ms) or "-",
                )
                for li in view.limits
            ],
        )
        show.out.print()
    held = [lane for lane in view.lanes if lane.state != "ready"]
    if held:
        show.table("lanes held back", ["processor", "tenant", "key", "runs", "why"],
                   [(ln.processor, ln.tenant, ln.key, ln.depth, ln.state) for ln in held])  # fmt: skip
        show.out.print()
    if view.schedules:
        show.table(
            "schedules",
            ["processor", "schedule", "last tick", "next tick"],
            [
                (sc.processor, sc.schedule, iso(sc.last_tick_ms) or "-", iso(sc.next_tick_ms) or "-")
                for sc in view.schedules
            ],
        )
        show.out.print()
    if len(view.memory) > 1:
        show.table(
            "redis memory",
            ["master", "used", "maxmemory", "used %"],
            [
                (m.node, human_bytes(m.used_bytes), human_bytes(m.max_bytes) if m.max_bytes else "not set",
                 f"{m.used_fraction:.0%}" if m.used_fraction is not None else "-")
                for m in view.memory
            ],
        )  # fmt: skip
        show.out.print()
    show.out.print(
        f"running {view.running}   due later {view.retry_waiting}   "
        f"webhooks pending {view.webhooks_pending}   dead-lettered {view.webhooks_dead}"
    )
    show.out.print(view.memory_summary, markup=False)


def _source() -> str:
    return "REDIS_URL" if os.environ.get("REDIS_URL") else "the default: REDIS_URL is not set"
