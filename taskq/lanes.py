"""Where a run waits and what it needs to start (docs/flow-control.md).

A queued run that is due waits in a *lane*: one per processor, tenant and limit key
(`processor|tenant|key`), ordered by priority and then age. Lanes take turns (the
claim step in scripts/claim.lua serves the lane whose turn is lowest and moves it to
the back), so one tenant's backlog delays another tenant's run by about one
run-length, never by the backlog; a lone lane still gets every free slot.

Before a run starts, every limit it needs must let it (limits.py): its processor's
own (`p:<processor>[:<key>]`), the named ones it lists (`n:<name>`), and the
deployment's per-tenant cap (`t:<tenant>`, TASKQ_TENANT_CONCURRENCY). A lane whose
next run must wait is *parked* until the limit gives units back or its pause ends.

This module places a run (what the gateway and `put()` compute from the processor's
advertised spec, never its code) and reads why one waits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import errors, keys, limits
from .broker import Broker, translated
from .clock import iso
from .models import PRIORITY_NAMES, RunInput
from .record import RunRecord

SEPARATOR = "|"
# Where every run that needs a named Limit lives when the data has several partitions
# (a Redis Cluster): one budget is one hash in one partition, and a processor may name
# several Limits that other processors share in other combinations.
NAMED_HOME = "n:"


@dataclass(frozen=True)
class Placement:
    lane: str  # processor|tenant|key
    band: int  # 0 high, 1 normal, 2 low
    limits: str  # "id*units,…": what the run needs to start
    colocate: str  # runs that share limits live together (keys.py: a partition each)


def place(req: RunInput, spec: dict[str, Any], tenant: str, where: str = "") -> Placement:
    """The lane, priority band and limits of a run of `spec`'s processor; a 422 naming
    the field when a key or cost path its processor declares is missing from the run."""
    flow = spec.get("flow") or {}
    name = req.processor
    metadata = dict(req.metadata or {})
    key = ""
    if flow.get("key"):
        key = _named(where, lambda: limits.key_value(flow["key"], req.input, metadata))
    uses: list[str] = []
    colocate = ""
    if flow.get("own"):
        own = f"p:{name}" + (f":{key}" if key else "")
        uses.append(f"{own}*1")
        colocate = own  # (each key's runs together: keys spread over the partitions)
    for shared in flow.get("shared") or []:
        units = _named(where, lambda s=shared: limits.units_value(s["units"], req.input, metadata))
        uses.append(f"n:{shared['name']}*{units}")
        colocate = NAMED_HOME
    priority = req.priority or spec.get("priority") or "normal"
    lane = SEPARATOR.join((name, tenant, key))
    return Placement(lane, PRIORITY_NAMES.index(priority), ",".join(uses), colocate)


def _named(where: str, read: Any) -> Any:
    """A 422 from a key or cost path, with the run's place in the request in front."""
    try:
        return read()
    except errors.ValidationFailed as exc:
        if not where:
            raise
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        field = where + str(detail.get("field", ""))
        raise errors.ValidationFailed(f"{where}{exc.message}", {**detail, "field": field}) from None


@dataclass(frozen=True)
class Waiting:
    """Why a queued run has not started: what a TaskRun's warnings say."""

    reason: str  # "no_worker" | "limit" | "paused" | "due_later"
    message: str
    detail: dict[str, Any]

    def warning(self) -> dict[str, Any]:
        return {"type": "warning", "message": self.message, "detail": {"waiting": self.reason, **self.detail}}


def why_waiting(broker: Broker, record: RunRecord, served: set[str], lane: bool = True) -> Waiting | None:
    """Why a queued run waits, if it is held back: no live worker serves its processor,
    or (`lane`) its lane is parked on a limit or a pause (None: it waits its turn)."""
    if record.processor not in served:
        return Waiting(
            "no_worker",
            f"no live worker serves processor {record.processor!r}; the run waits until one does",
            {"processor": record.processor},
        )
    if not lane or not record.lane:
        return None
    partition = keys.partition_of(record.id)
    with translated():
        parked = broker.redis.hget(keys.parked(partition), record.lane)
        if parked is None:
            return None
        if parked == "pause":
            until = broker.redis.zscore(keys.delayed(partition), record.lane)
            state = {}
        else:
            until = None
            state = broker.redis.hgetall(keys.limit(partition, parked))
    if parked == "pause":
        return Waiting(
            "paused", f"its lane waits for a limit until {iso(int(until or 0))}", {"until": iso(int(until or 0))}
        )
    return Waiting(
        "limit",
        f"waiting for limit {parked}: {state.get('n', '0')} unit(s) in flight",
        {"limit": parked, "in_flight": int(state.get("n") or 0)},
    )


def lane_parts(lane: str) -> tuple[str, str, str]:
    processor, tenant, key = lane.split(SEPARATOR, 2)
    return processor, tenant, key


def budgets_json(budgets: dict[str, limits.Budget]) -> str:
    return json.dumps({name: b.to_json() for name, b in sorted(budgets.items())}, sort_keys=True)
