"""A tenant's runs, newest first, a page at a time (GET /v1/tasks/runs).

The index is the sorted set `taskq:tenant:{tenant}:runs` that create.lua writes in
the same step as the runs. Every member has score 0, so the set is ordered by run id,
and a run id begins with its creation time in hex: the lexicographic order is the
creation order, to the millisecond (runs made in the same millisecond, as one group
add makes them, come in the order of their random id suffixes). A page is one ZRANGE … BYLEX REV from the cursor per partition (O(log N + page)
each, merged by id), then one pipelined HMGET per id read.

Filters (`status`, `processor`, `metadata.<key>`) are applied to the records as they are read, so a
filtered page costs the ids it has to look at, not the page size: at most
MAX_SCANNED ids per request. A page may therefore come back shorter than `limit`
(even empty) with a `next_cursor`: keep paging until `next_cursor` is null. The time
bounds (`created_after`, `created_before`) are bounds of the range read, so they
cost nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from . import errors, keys, wire
from .broker import Broker, translated
from .ids import RUN_ID, RUN_PREFIX
from .models import RunStatus, TaskRun, TaskRunList
from .record import WIRE, RunRecord, load_runs

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_SCANNED = 1000


@dataclass(frozen=True)
class RunFilter:
    status: RunStatus | None = None
    processor: str | None = None
    created_after_ms: int | None = None
    created_before_ms: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # (key, value as text): all must match

    def matches(self, record: RunRecord) -> bool:
        if self.status is not None and record.status is not self.status:
            return False
        if self.processor is not None and record.processor != self.processor:
            return False
        if self.metadata:
            meta = record.metadata or {}
            return all(k in meta and _as_text(meta[k]) == v for k, v in self.metadata)
        return True


def _as_text(value: object) -> str:
    """A metadata value as a query string spells it (true, 2, 2.5, text)."""
    return json.dumps(value) if isinstance(value, bool | int | float) else str(value)


def list_runs(
    broker: Broker, tenant: str, flt: RunFilter, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> TaskRunList:
    """The tenant's runs matching `flt`, newest first, at most `limit`; `next_cursor`
    continues after the last id looked at (null once there is nothing more)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise errors.ValidationFailed(f"limit: must be between 1 and {MAX_LIMIT}", {"field": "limit"})
    upper = "+"
    if flt.created_before_ms is not None:
        upper = f"({RUN_PREFIX}{flt.created_before_ms:012x}"
    if cursor:
        after = decode_cursor(cursor)
        upper = f"({after}" if upper == "+" else f"({min(after, upper[1:])}"
    lower = f"[{RUN_PREFIX}{flt.created_after_ms:012x}" if flt.created_after_ms is not None else "-"
    found: list[TaskRun] = []
    scanned = 0
    while True:
        want = limit - len(found)
        batch = min(MAX_SCANNED - scanned, max(want, 50) if _filtered(flt) else want)
        with translated():
            ids = _newest(broker, tenant, upper, lower, batch)
            records = load_runs(broker.redis, ids, WIRE)
        for i, (run_id, record) in enumerate(zip(ids, records, strict=True)):
            if record is not None and record.tenant == tenant and flt.matches(record):
                found.append(wire.to_task_run(record))
            if len(found) == limit:
                more = i + 1 < len(ids) or bool(_newest(broker, tenant, f"({run_id}", lower, 1))
                return TaskRunList(runs=found, next_cursor=encode_cursor(run_id) if more else None)
        scanned += len(ids)
        if len(ids) < batch:
            return TaskRunList(runs=found)
        upper = f"({ids[-1]}"
        if scanned >= MAX_SCANNED:
            return TaskRunList(runs=found, next_cursor=encode_cursor(ids[-1]))


def _filtered(flt: RunFilter) -> bool:
    return flt.status is not None or flt.processor is not None or bool(flt.metadata)


def _newest(broker: Broker, tenant: str, upper: str, lower: str, count: int) -> list[str]:
    """The tenant's `count` newest run ids in the id range, from every partition's index
    (each read for its own newest `count`, then merged: ids sort by creation time)."""
    with translated():
        pipe = broker.redis.pipeline(transaction=False)
        for partition in range(broker.partitions):
            pipe.zrange(keys.tenant_runs(partition, tenant), upper, lower, desc=True, bylex=True, offset=0, num=count)
        return sorted((run_id for ids in pipe.execute() for run_id in ids), reverse=True)[:count]


def encode_cursor(run_id: str) -> str:
    return base64.urlsafe_b64encode(run_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not RUN_ID.fullmatch(raw):
        raise errors.ValidationFailed("cursor: not a cursor this endpoint returned", {"field": "cursor"})
    return raw


def parse_time(name: str, value: str | None) -> int | None:
    """An RFC 3339 time (or epoch ms) as epoch ms; 422 naming `name` otherwise."""
    if value in (None, ""):
        return None
    assert value is not None
    if value.isascii() and value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise errors.ValidationFailed(f"{name}: must be an RFC 3339 time or epoch ms", {"field": name}) from None
    if dt.tzinfo is None:
        raise errors.ValidationFailed(f"{name}: must carry a time zone (e.g. Z)", {"field": name})
    return int(dt.timestamp() * 1000)
