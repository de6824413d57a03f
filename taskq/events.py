"""Server-sent event streams: a group's runs, a group's events, a run's events.

Each stream function checks its arguments (404, 422) before it returns, so a bad
request is an ordinary error response; what it returns is an iterator of SSE text
that the gateway sends as it comes. Live streams read Redis Streams with a blocking
XREAD, so an idle stream costs no polling, and every event carries the stream id as
its `event_id`: resuming with `last_event_id` continues exactly after it. A run
that has ended keeps its events folded into its record under the same ids (its
stream goes a few seconds later), so a finished run's events read, and resume, as
they did while it ran, its terminal `task_run.state` last. A comment
line is sent every `sse_heartbeat_s` so that proxies keep idle streams open, and so
that a client that has gone away is noticed (the write fails and the iterator is
closed, which frees its Redis connection) within one heartbeat.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import errors, group, keys, run, wire
from .broker import MAX_BLOCK_MS, Broker, translated
from .clock import iso
from .folding import Entry, unfold
from .models import RunStatus, TaskGroupStatus
from .record import GroupRecord, RunRecord, load_groups, load_runs

HEARTBEAT = ": ping\n\n"
MAX_STREAM_S = 3600.0
_READ_BATCH = 200
# ASCII digits only (\d would take any Unicode digit), within Redis's 64-bit range.
_STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
_MAX_ID_PART = 2**64 - 1


def sse(data: dict[str, Any], event_id: str | None = None) -> str:
    """One SSE message; the event type travels in the JSON, as the Parallel API does."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def error_event(exc: errors.TaskqError) -> str:
    return sse({"type": "error", "error": {"ref_id": "stream", "message": exc.message, "detail": exc.detail}})


def stream_id(value: str | None, field: str = "last_event_id") -> str:
    """A Redis Stream id to read after; '0-0' (from the start) when none is given."""
    if value in (None, ""):
        return "0-0"
    if not _STREAM_ID.fullmatch(value) or any(int(part) > _MAX_ID_PART for part in value.split("-")):
        raise errors.ValidationFailed(f"{field}: not an event id from this stream", {"field": field})
    return value


def read(
    broker: Broker, key: str, after: str, timeout_s: float, finished: Callable[[], bool]
) -> Iterator[list[Entry] | None]:
    """Batches of entries of the stream `key` after the id `after`, as they are added;
    None when a heartbeat is due. Ends once `finished()` holds, or `timeout_s` has
    passed, and every entry written until then has been yielded: `timeout_s=0` yields
    what is there and ends."""
    deadline = time.monotonic() + timeout_s
    heartbeat_s = broker.settings.sse_heartbeat_s
    next_beat = time.monotonic() + heartbeat_s
    while True:
        now = time.monotonic()
        if now >= deadline:
            yield from _written_until_now(broker, key, after)
            return
        entries = _xread(broker, key, after)
        if not entries:
            if finished():
                # finished() saw the last change; whatever was written before it is read now.
                while entries := _xread(broker, key, after):
                    after = entries[-1][0]
                    yield entries
                return
            # Each wait stays inside the Redis client's socket timeout (MAX_BLOCK_MS).
            wait_ms = int((min(deadline, next_beat) - now) * 1000)
            entries = _xread(broker, key, after, block_ms=max(1, min(wait_ms, MAX_BLOCK_MS)))
        if entries:
            after = entries[-1][0]
            yield entries
        elif time.monotonic() >= next_beat:
            yield None
        else:
            continue
        next_beat = time.monotonic() + heartbeat_s


def _written_until_now(broker: Broker, key: str, after: str) -> Iterator[list[Entry]]:
    """The entries after `after` up to the newest one now; those added meanwhile are
    left, so a busy stream cannot hold a timed-out reader."""
    with translated():
        newest = broker.redis.xrevrange(key, count=1)
    if not newest:
        return
    end = _order(newest[0][0])
    while entries := [entry for entry in _xread(broker, key, after) if _order(entry[0]) <= end]:
        after = entries[-1][0]
        yield entries


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _xread(broker: Broker, key: str, after: str, block_ms: int | None = None) -> list[Entry]:
    with translated():
        reply = broker.redis.xread({key: after}, count=_READ_BATCH, block=block_ms)
    return [entry for _key, batch in reply or () for entry in batch]


def _guarded(events: Iterator[str]) -> Iterator[str]:
    """Ends a stream that fails half-way with an `error` event instead of a cut.
    (Closing this generator closes `events` too: `yield from` passes it on.)"""
    # A first comment line at once: the client (and any proxy) gets the status and
    # headers now, not when the first event or heartbeat is due.
    yield HEARTBEAT
    try:
        yield from events
    except errors.TaskqError as exc:
        yield error_event(exc)


# -- GET /v1/tasks/groups/{id}/events


def group_events(
    broker: Broker, tenant: str, group_id: str, last_event_id: str | None, timeout_s: float
) -> Iterator[str]:
    """task_group_status and task_run.state events of the group as they happen."""
    group.load(broker, tenant, group_id)
    after = stream_id(last_event_id)
    return _guarded(_group_events(broker, group_id, after, min(timeout_s, MAX_STREAM_S)))


def _group_events(broker: Broker, group_id: str, after: str, timeout_s: float) -> Iterator[str]:
    def inactive() -> bool:
        return not group.is_active(broker, group_id)

    for batch in read(broker, keys.group_events(group_id), after, timeout_s, inactive):
        if batch is None:
            yield HEARTBEAT
            continue
        run_ids = [f["run_id"] for _id, f in batch if f.get("type") == "task_run.state"]
        with translated():
            records = dict(zip(run_ids, load_runs(broker.redis, run_ids), strict=True))
        for event_id, fields in batch:
            if fields.get("type") == "task_group_status":
                shaped = _group_status_as_of(broker, group_id, event_id, fields).model_dump(mode="json")
                yield sse({"type": "task_group_status", "event_id": event_id, "status": shaped}, event_id)
            elif fields.get("type") == "task_run.state" and (record := records.get(fields["run_id"])):
                task_run = _task_run(wire.as_of(record, event_ms(event_id), fields), broker)
                yield sse({"type": "task_run.state", "event_id": event_id, "run": task_run}, event_id)


def _group_status_as_of(broker: Broker, group_id: str, event_id: str, fields: dict[str, str]) -> TaskGroupStatus:
    if "counts" not in fields:  # written by an older version: the group as it is now
        with translated():
            return wire.group_status(load_groups(broker.redis, [group_id])[0] or GroupRecord({}))
    return wire.group_status(wire.group_as_of(event_ms(event_id), fields))


# -- GET /v1/tasks/groups/{id}/runs


def group_runs(
    broker: Broker,
    tenant: str,
    group_id: str,
    *,
    last_event_id: str | None,
    status: str | None,
    include_input: bool,
    include_output: bool,
) -> Iterator[str]:
    """One task_run.state event per run of the group, in the order they were added,
    each with the run as it is now; `event_id` is the run's position in the group."""
    group.load(broker, tenant, group_id)
    wanted = RunStatus.from_arg(status)
    if last_event_id in (None, ""):
        start = 0
    elif re.fullmatch(r"[0-9]{1,18}", last_event_id):  # a position; ASCII only, within LRANGE's range
        start = int(last_event_id) + 1
    else:
        raise errors.ValidationFailed("last_event_id: not an event id from this stream", {"field": "last_event_id"})
    return _guarded(_group_runs(broker, group_id, start, wanted, include_input, include_output))


def _group_runs(
    broker: Broker, group_id: str, start: int, wanted: RunStatus | None, include_input: bool, include_output: bool
) -> Iterator[str]:
    for position, record in group.run_records(broker, group_id, start):
        if wanted is not None and record.status is not wanted:
            continue
        event_id = str(position)
        event: dict[str, Any] = {"type": "task_run.state", "event_id": event_id, "run": _task_run(record, broker)}
        if include_input:
            event["input"] = wire.to_input(record)
        if include_output and record.status is RunStatus.completed:
            event["output"] = wire.to_result(record, broker).output.model_dump(mode="json")
        yield sse(event, event_id)


# -- GET /v1/tasks/runs/{id}/events


def run_events(broker: Broker, tenant: str, run_id: str, last_event_id: str | None, timeout_s: float) -> Iterator[str]:
    """The run's progress messages and status changes, from its start (or after
    `last_event_id`) until it has ended."""
    run.load(broker, tenant, run_id)
    after = stream_id(last_event_id)
    return _guarded(_run_events(broker, tenant, run_id, after, min(timeout_s, MAX_STREAM_S)))


def _run_events(broker: Broker, tenant: str, run_id: str, after: str, timeout_s: float) -> Iterator[str]:
    def ended() -> bool:
        with translated():
            current = broker.redis.hget(keys.run(run_id), "status")
        return current is None or RunStatus(current).is_terminal

    for batch in read(broker, keys.run_events(run_id), after, timeout_s, ended):
        if batch is None:
            yield HEARTBEAT
            continue
        after = batch[-1][0]
        yield from _run_entries(broker, tenant, run_id, batch)
    # A run that has ended keeps its events in its record, its stream only a few
    # seconds more (folding.EVENTS_LINGER_S): what was not read from the stream is there.
    with translated():
        rest = [e for e in unfold(broker.redis.hget(keys.run(run_id), "events")) or () if _after(e[0], after)]
    yield from _run_entries(broker, tenant, run_id, rest)


def _run_entries(broker: Broker, tenant: str, run_id: str, entries: list[Entry]) -> Iterator[str]:
    record: RunRecord | None = None
    for event_id, fields in entries:
        if fields.get("type") == "task_run.progress":
            message = {"type": "task_run.progress_msg.exec_status", "message": fields.get("message", "")}
            yield sse({**message, "timestamp": iso(event_ms(event_id))}, event_id)
        elif fields.get("type") == "task_run.state":
            if record is None:
                record = run.load(broker, tenant, run_id)
            as_of = _task_run(wire.as_of(record, event_ms(event_id), fields), broker)
            yield sse({"type": "task_run.state", "event_id": event_id, "run": as_of}, event_id)


def run_entries(broker: Broker, run_id: str) -> list[Entry]:
    """Every event of the run, as stream entries, oldest first: from its record once it
    has ended (and folded its stream), else from its stream."""
    with translated():
        folded = unfold(broker.redis.hget(keys.run(run_id), "events"))
        return folded if folded is not None else broker.redis.xrange(keys.run_events(run_id))


def _after(entry_id: str, after: str) -> bool:
    return _order(entry_id) > _order(after)


def _task_run(record: RunRecord, broker: Broker | None = None) -> dict[str, Any]:
    return wire.to_task_run(record, broker).model_dump(mode="json")


def event_ms(event_id: str) -> int:
    """When an event happened: a stream id is Redis's clock in ms, then a sequence."""
    return int(event_id.split("-", 1)[0])
