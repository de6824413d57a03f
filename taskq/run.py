"""A run's life as seen from outside the worker: create, read, wait, cancel.

The record is the hash `taskq:run:{id}`. Its fields (absent when empty):

    id, tenant, processor, queue, timeout_s, max_retries
    input            JSON of the input (an object, or a string for text input)
    metadata         JSON object
    output_schema    JSON Schema the output must meet (from task_spec)
    webhook          JSON of the webhook; webhook_all = '1' for every status change
    webhook_body     'upstream_response' (set by the async proxy only, never by a
                     client): a completed run's webhook carries the upstream's answer
    status           a RunStatus; changed only by the scripts in scripts/
    created_ms, modified_ms, started_ms, finished_ms, next_attempt_ms   epoch ms
    attempts         attempts started; interruptions: those a shutdown cut short
    token            the lease holder of the current attempt
    error, errors    the last error and every attempt's, as JSON
    output_type, output   the result: 'json' or 'text', and its JSON
    outputs_count, outputs_bytes, outputs_seq   its output files: how many, their
                     total size, and saves made (the files are listed beside the
                     record, outputs/record.py); `has_outputs` = '1' once it has any.
                     (`outputs`, a JSON list of them, in records of earlier versions)
    warnings         JSON list of WarningObjects made at create: one per request field
                     taskq accepted and does not act on (absent when none)
    required_action, answers   its question while waiting, and the answers given
                     (action.py)
    taskgroup_id, delivery_seq
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import action, catalog, errors, keys, outputs, upstream, webhook
from .broker import MAX_BLOCK_MS, Broker, now_ms, rq_job_data, rq_now, translated
from .catalog import Catalog
from .record import RunRecord
from .models import (
    NOT_ACTED_ON, ErrorObject, OutputFile, RequiredAction, RunInput, RunStatus, TaskRun, TaskRunOutput, TaskRunResult,
    WarningObject, dumps, request_json,
)  # fmt: skip

RUN_PREFIX = "trun_"
# A run names at most this many ignored fields (the last warning counts the rest),
# each path cut to MAX_FIELD_CHARS: the record stays small whatever the body holds.
MAX_WARNINGS = 20
MAX_FIELD_CHARS = 200
# What new_run_id makes; anything else is not a run (and never reaches a Redis key).
RUN_ID = re.compile(r"trun_[0-9a-f]{32}")


def new_run_id() -> str:
    # The creation time leads the id, so an id older than the retention whose record
    # is gone can be told apart (410) from one that never was (404).
    return f"{RUN_PREFIX}{now_ms():012x}{secrets.token_hex(10)}"


def tenant_of(api_key: str) -> str:
    """A tenant is named by a digest of its key; the key itself is never stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def iso(ms: str | int | None) -> str | None:
    if ms in (None, ""):
        return None
    dt = datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class NewRun:
    """A checked request for one run, ready to be written."""

    run_id: str
    queue: str
    timeout_s: int
    fields: dict[str, str | int]


def prepare(
    broker: Broker, procs: Catalog, tenant: str, req: RunInput, where: str = "", ignored: list[str] | None = None
) -> NewRun:
    """Checks one run request against its processor and task_spec; raises
    ValidationFailed (naming the field under `where`) and writes nothing. The run's
    warnings name the request's fields taskq does not act on: `ignored`, or else
    those of `req`."""
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

    timeout_s = min(int(spec.get("timeout_s") or settings.default_timeout_s), settings.max_timeout_s)
    run_id = new_run_id()
    fields: dict[str, str | int] = {
        "id": run_id,
        "tenant": tenant,
        "processor": req.processor,
        "queue": spec.get("queue") or "default",
        "timeout_s": timeout_s,
        "max_retries": spec["retries"] if spec.get("retries") is not None else settings.default_retries,
        "input": request_json(req.input, f"{where}input"),
        "created_ms": now_ms(),
    }
    if req.metadata:
        fields["metadata"] = request_json(req.metadata, f"{where}metadata")
    if warnings := not_acted_on(req.ignored(where) if ignored is None else ignored, where):
        fields["warnings"] = dumps(warnings)
    if spec_out is not None and spec_out.type == "json":
        fields["output_schema"] = request_json(spec_out.json_schema, f"{where}task_spec.output_schema.json_schema")
    if req.webhook is not None:
        webhook.check_url(req.webhook.url, settings, field=f"{where}webhook.url")
        fields["webhook"] = req.webhook.model_dump_json()
        if req.webhook.every_change:
            fields["webhook_all"] = "1"
    return NewRun(run_id, str(fields["queue"]), timeout_s, fields)


def not_acted_on(fields: list[str], where: str = "") -> list[dict[str, Any]]:
    """One warning per request field taskq accepted and does not act on; `where` is
    the run's place in the request (`inputs.3.` in a group add)."""
    if len(fields) <= MAX_WARNINGS:
        return [_not_acted_on(name, where) for name in fields]
    rest = len(fields) - MAX_WARNINGS + 1
    named = [_not_acted_on(name, where) for name in fields[: MAX_WARNINGS - 1]]
    return named + [{"type": "warning", "message": f"{rest} more fields given are not acted on", "detail": {"count": rest}}]


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
) -> tuple[list[str], bool]:
    """Writes the runs and their RQ jobs in one atomic step. Returns the run ids and
    whether they were made now (False: the Idempotency-Key had already made one).
    The same Idempotency-Key with another `request` (its raw bytes) is a 422."""
    settings = broker.settings
    idem = ""
    if idempotency_key:
        idem = keys.idempotency(tenant, hashlib.sha256(idempotency_key.encode()).hexdigest()[:32])
    args: list[str | int | bytes] = [
        rq_now(), rq_job_data(), settings.retention_s,
        idem, settings.idempotency_ttl_s, settings.max_queue_length, group_id or "",
        keys.rate_prefix(tenant), settings.rate_limit_per_s,
        hashlib.sha256(request).hexdigest()[:32] if idem else "",
    ]  # fmt: skip
    for run in runs:
        args += [run.run_id, run.queue, run.timeout_s, len(run.fields)]
        for name, value in run.fields.items():
            args += [name, value]
    with translated():
        reply = broker.scripts.create(args=args)
    if reply[0] == "mismatch":
        raise errors.ValidationFailed(
            f"Idempotency-Key was already used for run {reply[1]} with a different request",
            {"field": "Idempotency-Key", "run_id": reply[1]},
        )
    if reply[0] == "full":
        raise errors.QueueFull(f"queue {reply[1]!r} is full; retry later", retry_after_s=5)
    if reply[0] == "limited":
        raise errors.QueueFull(
            f"rate limit of {settings.rate_limit_per_s} runs a second reached; retry shortly", retry_after_s=1
        )
    if reply[0] != "created":
        return [reply[1]], False
    for run in runs:  # as stored: Redis's clock, not this process's
        run.fields["created_ms"] = int(reply[1])
    return list(reply[2:]), True


def load(broker: Broker, tenant: str, run_id: str) -> dict[str, str]:
    """The run's record; NotFound for an unknown id or another tenant's run, Gone for
    one that has expired."""
    with translated():
        record = broker.redis.hgetall(keys.run(run_id)) if RUN_ID.fullmatch(run_id) else {}
    if not record or record.get("tenant") != tenant:
        if not record and _expired(run_id, broker.settings.retention_s):
            raise errors.Gone(f"run {run_id} has expired: finished runs are kept {broker.settings.retention_s} s")
        raise errors.NotFound(f"run {run_id} not found")
    return record


def _expired(run_id: str, retention_s: int) -> bool:
    try:
        created_ms = int(run_id[len(RUN_PREFIX) : len(RUN_PREFIX) + 12], 16)
    except ValueError:
        return False
    return len(run_id) == len(RUN_PREFIX) + 32 and created_ms < now_ms() - retention_s * 1000


def to_task_run(record: dict[str, str] | RunRecord, broker: Broker | None = None) -> TaskRun:
    """The run on the wire; with `broker`, its output files with fresh URLs."""
    rec = record if isinstance(record, RunRecord) else RunRecord.from_hash(record)
    status = RunStatus(rec.status)
    return TaskRun(
        run_id=rec.id,
        interaction_id=rec.id,
        status=status,
        is_active=status.is_active,
        processor=rec.processor,
        metadata=rec.metadata,
        taskgroup_id=rec.taskgroup_id,
        created_at=iso(rec.created_ms) or "",
        modified_at=iso(rec.modified_ms or rec.created_ms) or "",
        error=ErrorObject(**rec.error) if rec.error else None,
        warnings=[WarningObject(**w) for w in json.loads(rec.raw["warnings"])] if rec.raw.get("warnings") else None,
        attempts=rec.attempts,
        max_retries=rec.max_retries,
        started_at=iso(rec.started_ms or None),
        finished_at=iso(rec.finished_ms or None),
        next_attempt_at=iso(rec.next_attempt_ms or None),
        errors=[ErrorObject(**e) for e in rec.errors],
        **_outputs(rec, broker),
        required_action=RequiredAction(**asked) if (asked := action.required_action(rec.raw)) else None,
    )


def _outputs(rec: RunRecord, broker: Broker | None) -> dict[str, Any]:
    """The TaskRun's output fields: with `broker`, the first page of files with fresh
    URLs; without, none listed but where to find them."""
    total = outputs.count(rec.raw)
    if broker is None or not total:
        return {"outputs_count": total, "outputs_next": outputs.record.listing_path(rec.id) if total else None}
    first = outputs.page(broker, rec.raw)
    return {
        "outputs": [OutputFile(**f) for f in first.files],
        "outputs_count": total,
        "outputs_next": outputs.record.listing_path(rec.id, first.next_cursor) if first.next_cursor else None,
    }


def new_task_run(run: NewRun) -> TaskRun:
    """The TaskRun of a run just created, without reading it back."""
    return to_task_run({**{k: str(v) for k, v in run.fields.items()}, "status": RunStatus.queued.value})


def to_result(record: dict[str, str], broker: Broker | None = None) -> TaskRunResult:
    output = TaskRunOutput(type=record.get("output_type", "json"), content=json.loads(record.get("output", "null")))  # type: ignore[arg-type]
    return TaskRunResult(run=to_task_run(record, broker), output=output)


def wait_for_end(broker: Broker, tenant: str, run_id: str, timeout_s: float) -> dict[str, str]:
    """Blocks until the run has ended or `timeout_s` passes, reading the run's event
    stream with a blocking XREAD rather than polling; returns the record either way."""
    record = load(broker, tenant, run_id)
    deadline = time.monotonic() + timeout_s
    last_id = "0-0"
    while not RunStatus(record["status"]).is_terminal:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            break
        with translated():
            reply = broker.redis.xread({keys.run_events(run_id): last_id}, block=min(remaining_ms, MAX_BLOCK_MS), count=100)
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
    status = RunStatus(record["status"])
    if not status.is_terminal:
        raise errors.ResultNotReady(f"run {run_id} is still {status.value} after {timeout_s:g} s", {"status": status.value})
    if status is not RunStatus.completed:
        error = json.loads(record["error"]) if record.get("error") else {}
        raise errors.Conflict(
            f"run {run_id} ended {status.value}" + (f": {error['message']}" if error.get("message") else ""),
            {"status": status.value, "error": error or None},
        )
    return to_result(record, broker)


def cancel(broker: Broker, tenant: str, run_id: str) -> dict[str, str]:
    """queued: cancelled at once; running: cancelling until its worker stops it."""
    load(broker, tenant, run_id)
    with translated():
        reply = broker.scripts.cancel(args=[run_id, broker.settings.retention_s])
    if isinstance(reply, list):
        raise errors.Conflict(f"run {run_id} is {reply[1]} and cannot be cancelled", {"status": reply[1]})
    return load(broker, tenant, run_id)


def to_input(record: dict[str, str]) -> dict[str, Any]:
    """The run as it was asked for (GET …/input), in the RunInput wire shape."""
    shaped: dict[str, Any] = {"input": json.loads(record["input"]), "processor": record["processor"]}
    if record.get("metadata"):
        shaped["metadata"] = json.loads(record["metadata"])
    if record.get("output_schema"):
        shaped["task_spec"] = {"output_schema": {"type": "json", "json_schema": json.loads(record["output_schema"])}}
    return shaped
