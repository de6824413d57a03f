"""A task group's life: create, read, add runs, cancel.

Its record is `GroupRecord` (record.py): the hash `taskq:group:{id}` with its
per-status counters, kept by set_status in the same atomic step that changes a run.
The group's runs are the list `taskq:group:{id}:runs`, in the order they were added;
its events are the stream `taskq:group:{id}:events`. How it looks on the wire:
wire.group_status and wire.to_task_group.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import catalog, errors, keys, run
from .broker import Broker, translated
from .catalog import Catalog
from .clock import now_ms
from .ids import GROUP_ID, new_group_id, partition_of
from .jsontext import parse, request_json
from .models import ACTIVE, RunInput, TaskGroupCreate, TaskGroupRunRequest, TaskGroupRunResponse, TaskSpec
from .outputs import payloads
from .record import COUNT_PREFIX, GroupRecord, RunRecord, load_groups, load_runs
from .wire import group_status

MAX_INPUTS = 1000
_CANCEL_BATCH = 200  # runs per cancel script: other clients wait for one batch, never a whole group


def create(broker: Broker, tenant: str, req: TaskGroupCreate) -> GroupRecord:
    """Makes an empty group; returns its record. Its runs will live in its partition."""
    ms = now_ms()
    partition = broker.partition_for()
    record = {"id": new_group_id(partition), "tenant": tenant, "created_ms": str(ms), "modified_ms": str(ms)}
    record["num_task_runs"] = "0"
    if req.metadata:
        record["metadata"] = request_json(req.metadata, "metadata")
    with translated():
        pipe = broker.redis.pipeline()
        pipe.hset(keys.group(record["id"]), mapping=record)
        # A group that never gets a run expires like a finished one.
        pipe.expire(keys.group(record["id"]), broker.settings.retention_s)
        # The tenant's groups, newest first by id (the dashboard lists them).
        pipe.zadd(keys.tenant_groups(partition, tenant), {record["id"]: 0})
        pipe.execute()
    return GroupRecord(record)


def load(broker: Broker, tenant: str, group_id: str) -> GroupRecord:
    """The group's record; NotFound for an unknown id or another tenant's group."""
    with translated():
        found = load_groups(broker.redis, [group_id])[0] if GROUP_ID.fullmatch(group_id) else None
    if found is None or found.tenant != tenant:
        raise errors.NotFound(f"task group {group_id} not found")
    return found


def recent(broker: Broker, tenant: str, limit: int = 50) -> list[GroupRecord]:
    """The tenant's newest groups still kept, newest first (their ids sort by creation
    time, in every partition); ids whose group has expired are dropped from the index
    as they are met."""
    found: list[GroupRecord] = []
    with translated():
        for partition in range(broker.partitions):
            index = keys.tenant_groups(partition, tenant)
            ids = broker.redis.zrange(index, "+", "-", desc=True, bylex=True, offset=0, num=limit)
            records = load_groups(broker.redis, ids)
            gone = [gid for gid, rec in zip(ids, records, strict=True) if rec is None]
            if gone:
                broker.redis.zrem(index, *gone)
            found += [rec for rec in records if rec is not None and rec.tenant == tenant]
    return sorted(found, key=lambda g: g.id, reverse=True)[:limit]


def is_active(broker: Broker, group_id: str) -> bool:
    with translated():
        counts = broker.redis.hmget(keys.group(group_id), [COUNT_PREFIX + s.value for s in ACTIVE])
    return any(int(c or 0) > 0 for c in counts)


def add_runs(
    broker: Broker, procs: Catalog, tenant: str, group_id: str, req: TaskGroupRunRequest
) -> TaskGroupRunResponse:
    """Checks every input first, then writes all the runs in one atomic step: one bad
    input (or more than MAX_INPUTS) rejects the whole call and nothing is added."""
    load(broker, tenant, group_id)
    if len(req.inputs) > MAX_INPUTS:
        raise errors.ValidationFailed(
            f"inputs: at most {MAX_INPUTS} runs per call, got {len(req.inputs)}; split them across calls",
            {"field": "inputs", "max": MAX_INPUTS, "got": len(req.inputs)},
        )
    if not req.inputs:
        raise errors.ValidationFailed("inputs: at least one run is needed", {"field": "inputs"})
    # Fields of the request itself that taskq does not act on: named on each of its runs.
    shared = req.ignored()
    with catalog.budget():  # one request, one budget of schema work, however many inputs
        new = [
            _prepare(broker, procs, tenant, group_id, i, item, req.default_task_spec, shared)
            for i, item in enumerate(req.inputs)
        ]
    with translated():
        # Read before the write: every event of the new runs comes after this id.
        last = broker.redis.xrevrange(keys.group_events(group_id), count=1)
    ids, _ = run.create(broker, new, tenant=tenant, group_id=group_id)
    with translated():
        pipe = broker.redis.pipeline(transaction=False)
        pipe.lpos(keys.group_runs(group_id), ids[0], rank=-1)
        pipe.hgetall(keys.group(group_id))
        *_, first_index, record = pipe.execute()
    return TaskGroupRunResponse(
        status=group_status(GroupRecord(record)),
        run_ids=ids,
        run_cursor=str(first_index - 1) if first_index else None,
        event_cursor=last[0][0] if last else None,
    )


def _prepare(
    broker: Broker,
    procs: Catalog,
    tenant: str,
    group_id: str,
    index: int,
    item: Any,
    default_spec: TaskSpec | None,
    shared: list[str],
) -> run.NewRun:
    where = f"inputs.{index}."
    if not isinstance(item, dict):
        field = f"inputs.{index}"
        raise errors.ValidationFailed(f"{field}: must be an object", {"field": field, "index": index})
    req = parse(RunInput, item, where)
    ignored = shared + req.ignored(where)  # before the default spec joins it, named as the request has it
    if req.task_spec is None and default_spec is not None:
        req = req.model_copy(update={"task_spec": default_spec})
    try:
        return run.prepare(broker, procs, tenant, req, where, ignored, partition=partition_of(group_id))
    except errors.ValidationFailed as exc:
        if exc.message.startswith(where):
            raise
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        field = where + str(detail.get("field", "")).removeprefix(where)
        raise errors.ValidationFailed(f"{field}: {exc.message}", {**detail, "field": field, "index": index}) from None


def run_of(broker: Broker, tenant: str, group_id: str, run_id: str) -> RunRecord:
    """One run of the group; NotFound when the run is not in it."""
    load(broker, tenant, group_id)
    record = run.load(broker, tenant, run_id)
    if record.taskgroup_id != group_id:
        raise errors.NotFound(f"run {run_id} is not in task group {group_id}")
    return record


def _run_id_batches(broker: Broker, group_id: str, start: int, batch: int) -> Iterator[tuple[int, list[str]]]:
    """(position of the first, ids) of the group's runs from `start`, `batch` at a time."""
    position = start
    while True:
        with translated():
            ids = broker.redis.lrange(keys.group_runs(group_id), position, position + batch - 1)
        if not ids:
            return
        yield position, ids
        position += len(ids)


def run_records(broker: Broker, group_id: str, start: int = 0, batch: int = 500) -> Iterator[tuple[int, RunRecord]]:
    """(position, record) of each run of the group from `start`, in the order added;
    runs whose record has expired are skipped."""
    for position, ids in _run_id_batches(broker, group_id, start, batch):
        with translated():
            records = load_runs(broker.redis, ids, blobs=payloads.reader(broker))
        for offset, record in enumerate(records):
            if record is not None:
                yield position + offset, record


def cancel(broker: Broker, tenant: str, group_id: str) -> GroupRecord:
    """Cancels every active run of the group (queued ones at once, running ones once
    their worker stops them); returns the group's record afterwards."""
    load(broker, tenant, group_id)
    retention_s, partition = broker.settings.retention_s, partition_of(group_id)
    for _position, ids in _run_id_batches(broker, group_id, 0, _CANCEL_BATCH):
        # One script call per batch (a group's runs share its partition); cancel.lua
        # leaves a finished run alone.
        with translated():
            broker.scripts.cancel(partition, retention_s, broker.rq_mirror, *ids)
    return load(broker, tenant, group_id)
