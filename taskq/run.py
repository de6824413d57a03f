"""A run's life as seen from outside the worker: prepare and create, read, wait,
cancel. Its record is `RunRecord` (record.py, where its fields are listed); how it
looks on the wire is wire.py.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from . import capacity, catalog, errors, ids, keys, lanes, tracing, upstream
from .broker import MAX_BLOCK_MS, Broker, translated
from .catalog import Catalog
from .clock import now_ms
from .jsontext import dumps, request_json
from .models import NOT_ACTED_ON, PRIORITY_NAMES, RunInput, RunStatus, TaskRunResult
from .outputs import payloads
from .record import RunRecord, load_runs
from .webhooks import address
from .wire import to_result

# A run names at most this many ignored fields (the last warning counts the rest),
# each path cut to MAX_FIELD_CHARS: the record stays small whatever the body holds.
MAX_WARNINGS = 20
MAX_FIELD_CHARS = 200
NORMAL_BAND = PRIORITY_NAMES.index("normal")


@dataclass
class NewRun:
    """A checked request for one run, ready to be written: its partition, when it is
    due (None: now) and its record's fields."""

    run_id: str
    partition: int
    due_ms: int | None
    fields: dict[str, str | int]


def prepare(
    broker: Broker,
    procs: Catalog,
    tenant: str,
    req: RunInput,
    where: str = "",
    ignored: list[str] | None = None,
    partition: int | None = None,
) -> NewRun:
    """Checks one run request against its processor and task_spec; raises
    ValidationFailed (naming the field under `where`) and writes nothing. The run's
    warnings name the request's fields taskq does not act on: `ignored`, or else
    those of `req`. `partition`: where it must live (its group's, its Idempotency-Key's);
    otherwise with its limits, or anywhere."""
    spec = procs.get(req.processor)
    settings = broker.settings
    if req.processor == "http" and isinstance(req.input, dict):
        # Checked here too (the processor checks again), so a bad call is a 422 now.
        base = upstream.check_name(req.input.get("upstream"), settings.upstreams, f"{where}input.upstream")
        upstream.url(base, str(req.input.get("path") or ""), field=f"{where}input.path")
    spec_in = req.task_spec.input_schema if req.task_spec else None
    spec_out = req.task_spec.output_schema if req.task_spec else None
    if spec_in is not None and spec_in.type == "json":
        catalog.check_schema(spec_in.json_schema, f"{where}task_spec.input_schema")
        catalog.check(req.input, spec_in.json_schema, f"{where}input")
    if spec.get("input_schema"):
        catalog.check(req.input, spec["input_schema"], f"{where}input")
    if spec_out is not None and spec_out.type == "json":
        catalog.check_schema(spec_out.json_schema, f"{where}task_spec.output_schema")
    flow = lanes.place(req, spec, tenant, where)
    due_ms = _due(req, settings.retention_s, where)
    if partition is None:
        # The tenant cap is one budget too: a tenant's runs live together when it is on.
        tenant_cap = f"t:{tenant}" if settings.tenant_concurrency else ""
        partition = broker.partition_for(flow.colocate or tenant_cap)
    run_id = ids.new_run_id(partition)
    fields: dict[str, str | int] = {
        "id": run_id,
        "tenant": tenant,
        "processor": req.processor,
        "queue": spec.get("queue") or "default",
        "timeout_s": int(spec["timeout_s"]),  # the worker's settings filled it in (Processor.spec)
        "max_retries": spec["retries"],
        "input": request_json(req.input, f"{where}input"),
        "lane": flow.lane,
    }
    if flow.band != NORMAL_BAND:  # (absent: normal, as every reader takes it)
        fields["priority_band"] = flow.band
    if flow.limits:
        fields["limits"] = flow.limits
    if req.metadata:
        fields["metadata"] = request_json(req.metadata, f"{where}metadata")
    if warnings := not_acted_on(req.ignored(where) if ignored is None else ignored, where):
        fields["warnings"] = dumps(warnings)
    if spec_out is not None and spec_out.type == "json":
        fields["output_schema"] = request_json(spec_out.json_schema, f"{where}task_spec.output_schema.json_schema")
    if req.webhook is not None:
        address.check_url(req.webhook.url, settings, field=f"{where}webhook.url")
        fields["webhook"] = req.webhook.model_dump_json()
        if req.webhook.every_change:
            fields["webhook_all"] = "1"
    if (parent := tracing.traceparent()) is not None:  # the span making it (gateway/traces.py): its trace goes on
        fields["traceparent"] = parent
    return NewRun(run_id, partition, due_ms, fields)


def _due(req: RunInput, retention_s: int, where: str) -> int | None:
    """When a run asked for later is due (None: now); a 422 past what taskq keeps."""
    if req.run_at is None:
        return None
    due = int(req.run_at.timestamp() * 1000)
    if due - now_ms() > retention_s * 1000:
        field = f"{where}run_at"
        raise errors.ValidationFailed(
            f"{field}: more than the retention ({retention_s} s) ahead; a run cannot wait longer than taskq keeps it",
            {"field": field},
        )
    return due if due > now_ms() else None


def not_acted_on(fields: list[str], where: str = "") -> list[dict[str, Any]]:
    """One warning per request field taskq accepted and does not act on; `where` is
    the run's place in the request (`inputs.3.` in a group add)."""
    if len(fields) <= MAX_WARNINGS:
        return [_not_acted_on(name, where) for name in fields]
    rest = len(fields) - MAX_WARNINGS + 1
    named = [_not_acted_on(name, where) for name in fields[: MAX_WARNINGS - 1]]
    return named + [
        {"type": "warning", "message": f"{rest} more fields given are not acted on", "detail": {"count": rest}}
    ]


def _not_acted_on(field: str, where: str) -> dict[str, Any]:
    if field.startswith(where) and field[len(where) :] in NOT_ACTED_ON:
        message = "accepted for compatibility with the Parallel Task API; taskq does not act on it"
    else:
        message = "not a field taskq knows; ignored"
    if len(field) > MAX_FIELD_CHARS:
        field = field[: MAX_FIELD_CHARS - 1] + "…"
    return {"type": "warning", "message": f"{field}: {message}", "detail": {"field": field}}


def create(
    broker: Broker,
    runs: list[NewRun],
    *,
    tenant: str = "",
    idempotency_key: str | None = None,
    request: bytes = b"",
    group_id: str | None = None,
    guard: Guard | None = None,
    partition: int | None = None,
) -> tuple[list[str], bool]:
    """Writes the runs (all of one partition) in one atomic step. Returns the run ids
    and whether they were made now (False: the Idempotency-Key had already made one,
    or the `guard`'s tick was fired by another worker). The same Idempotency-Key with
    another `request` (its raw bytes) is a 422; a master past its memory high-water
    mark is a 503 (capacity.py), before anything is written."""
    settings = broker.settings
    partition = runs[0].partition if runs else partition
    assert partition is not None and all(r.partition == partition for r in runs), "one create, one partition"
    if runs and settings.memory_high_water > 0:
        with translated():
            capacity.admit(broker.memory_of(partition), settings.memory_high_water)
    if settings.rate_limit_per_s:
        _count_against_rate(broker, tenant, len(runs))
    idem = idempotency_digest(idempotency_key) if idempotency_key else ""
    args: list[str | int | bytes] = [
        settings.retention_s,
        tenant,
        idem,
        settings.idempotency_ttl_s,
        hashlib.sha256(request).hexdigest()[:32] if idem else "",
        settings.max_queue_length,
        group_id or "",
        broker.rq_mirror,
        *(guard.args() if guard else ("", "", "", "", "")),
    ]
    stored = [_stored_fields(broker, run) for run in runs]
    for run, fields in zip(runs, stored, strict=True):
        args += [run.run_id, run.due_ms or "", len(fields)]
        for name, value in fields.items():
            args += [name, value]
    try:
        with translated():
            if settings.wait_replicas:
                reply = _create_on_replicas(broker, partition, args)
            else:
                reply = broker.scripts.create(partition, *args)
    except BaseException:
        payloads.discard(broker, [f["input"] for f in stored])
        raise
    if reply[0] != "created":
        payloads.discard(broker, [f["input"] for f in stored])
    if reply[0] == "mismatch":
        raise errors.ValidationFailed(
            f"Idempotency-Key was already used for run {reply[1]} with a different request",
            {"field": "Idempotency-Key", "run_id": reply[1]},
        )
    if reply[0] == "full":
        raise errors.QueueFull(f"queue {reply[1]!r} is full; retry later", retry_after_s=5)
    if reply[0] == "skipped":
        return [], False
    if reply[0] != "created":
        return [reply[1]], False
    for run in runs:  # as stored: Redis's clock, not this process's
        run.fields["created_ms"] = int(reply[1])
        if run.due_ms:
            run.fields["next_attempt_ms"] = run.due_ms
    return list(reply[2:]), True


def _stored_fields(broker: Broker, run: NewRun) -> dict[str, str | int | bytes]:
    """The run's fields as written: its input kept as payload.py says (compressed, or
    in the output storage, the run then marked as holding bytes there)."""
    stored = payloads.store(broker, run.run_id, "input", str(run.fields["input"]))
    fields: dict[str, str | int | bytes] = {**run.fields, "input": stored}
    if payloads.offloaded(stored):
        fields["has_outputs"] = "1"
    return fields


def _create_on_replicas(broker: Broker, partition: int, args: list[str | int | bytes]) -> list[Any]:
    """The create, then WAIT on the same connection to the partition's master: the runs
    are on TASKQ_WAIT_REPLICAS replicas before anyone hears they were made."""
    settings = broker.settings
    pipe = broker.node_for(partition).pipeline(transaction=False)
    broker.scripts.create(partition, *args, client=pipe)
    pipe.execute_command("WAIT", settings.wait_replicas, settings.wait_replicas_timeout_ms)
    reply, acked = pipe.execute()
    if reply[0] == "created" and int(acked) < settings.wait_replicas:
        raise errors.BrokerUnavailable(
            f"the run was written but reached {acked} of {settings.wait_replicas} replica(s) within "
            f"{settings.wait_replicas_timeout_ms} ms, so a failover could lose it; retry with the same "
            "Idempotency-Key",
            retry_after_s=1,
        )
    return list(reply)


@dataclass(frozen=True)
class Guard:
    """Makes a create happen only if a schedule's next tick is still `expected`, and
    moves it to `next_ms` (schedule.py): exactly one run per tick."""

    processor: str
    expected: int | None
    next_ms: int
    tick_ms: int | None
    spec: str

    def args(self) -> tuple[str | int, ...]:
        return (self.processor, self.expected or "", self.next_ms, self.tick_ms or "", self.spec)


def idempotency_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def partition_of_key(broker: Broker, key: str | None) -> int | None:
    """The partition a request with this Idempotency-Key lives in (where its key is)."""
    return None if not key else int(idempotency_digest(key)[:8], 16) % broker.partitions


def _count_against_rate(broker: Broker, tenant: str, count: int) -> None:
    """The tenant's runs this second of Redis's clock (TASKQ_RATE_LIMIT_PER_S): a 429
    past the limit, counting the whole call (a group add counts each run)."""
    with translated():
        used = broker.scripts.rate(keys.rate(tenant), count, broker.settings.rate_limit_per_s)
    if not used:
        raise errors.RateLimitExceeded(
            f"rate limit of {broker.settings.rate_limit_per_s} runs a second reached; retry shortly", retry_after_s=1
        )


def load(broker: Broker, tenant: str, run_id: str) -> RunRecord:
    """The run's record; NotFound for an unknown id or another tenant's run, Gone for
    one that has expired."""
    found = None
    if ids.RUN_ID.fullmatch(run_id):
        with translated():
            found = load_runs(broker.redis, [run_id], blobs=payloads.reader(broker))[0]
    if found is None or found.tenant != tenant:
        if found is None and ids.older_than(run_id, broker.settings.retention_s):
            raise errors.Gone(f"run {run_id} has expired: finished runs are kept {broker.settings.retention_s} s")
        raise errors.NotFound(f"run {run_id} not found")
    return found


def wait_for_end(broker: Broker, tenant: str, run_id: str, timeout_s: float) -> RunRecord:
    """Blocks until the run has ended or `timeout_s` passes, reading the run's event
    stream with a blocking XREAD rather than polling; returns the record either way."""
    record = load(broker, tenant, run_id)
    deadline = time.monotonic() + timeout_s
    last_id = "0-0"
    while not record.status.is_terminal:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            break
        with translated():
            reply = broker.redis.xread(
                {keys.run_events(run_id): last_id}, block=min(remaining_ms, MAX_BLOCK_MS), count=100
            )
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                last_id = entry_id
                if fields.get("type") == "task_run.state" and RunStatus(fields["status"]).is_terminal:
                    return load(broker, tenant, run_id)
        if not reply:
            record = load(broker, tenant, run_id)
    return record


def result(broker: Broker, tenant: str, run_id: str, timeout_s: float) -> TaskRunResult:
    record = wait_for_end(broker, tenant, run_id, timeout_s)
    status = record.status
    if not status.is_terminal:
        raise errors.ResultNotReady(
            f"run {run_id} is still {status.value} after {timeout_s:g} s", {"status": status.value}
        )
    if status is not RunStatus.completed:
        error = record.error or {}
        raise errors.Conflict(
            f"run {run_id} ended {status.value}" + (f": {error['message']}" if error.get("message") else ""),
            {"status": status.value, "error": error or None},
        )
    return to_result(record, broker)


def cancel(broker: Broker, tenant: str, run_id: str) -> RunRecord:
    """queued: cancelled at once; running: cancelling until its worker stops it."""
    load(broker, tenant, run_id)
    with translated():
        [reply] = broker.scripts.cancel(ids.partition_of(run_id), broker.settings.retention_s, broker.rq_mirror, run_id)
    if isinstance(reply, list):
        raise errors.Conflict(f"run {run_id} is {reply[1]} and cannot be cancelled", {"status": reply[1]})
    return load(broker, tenant, run_id)
