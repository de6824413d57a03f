"""How records look on the wire: a run as the Parallel API's TaskRun, its result,
its input, a group's status. The presenters every reader shares (the API, event
streams, webhooks, the dashboard); they read typed records and write nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import lanes, outputs, paths, registry
from .broker import Broker
from .clock import iso
from .jsontext import dumps
from .models import (
    ACTIVE,
    ErrorObject,
    OutputFile,
    RequiredAction,
    RunStatus,
    TaskGroup,
    TaskGroupStatus,
    TaskRun,
    TaskRunOutput,
    TaskRunResult,
    WarningObject,
)
from .record import GroupRecord, RunRecord


def to_task_run(rec: RunRecord, broker: Broker | None = None, explain: str = "") -> TaskRun:
    """The run on the wire; with `broker`, the first page of its output files with
    fresh URLs (without, where to list them). `explain`: a queued run held back says
    why in its warnings: "workers" whether a live worker serves it, "all" that and
    whether its lane waits for a limit or a pause."""
    status = rec.status
    warnings = [WarningObject(**w) for w in rec.warnings or []]
    if explain and broker is not None and status is RunStatus.queued:
        held = lanes.why_waiting(broker, rec, registry.served(broker), lane=explain == "all")
        if held is not None:
            warnings.append(WarningObject(**held.warning()))
    return TaskRun(
        run_id=rec.id,
        interaction_id=rec.id,
        status=status,
        is_active=status.is_active,
        processor=rec.processor,
        metadata=rec.metadata,
        taskgroup_id=rec.taskgroup_id,
        created_at=iso(rec.created_ms) or "",
        modified_at=iso(rec.modified_ms) or "",
        error=ErrorObject(**rec.error) if rec.error else None,
        warnings=warnings or None,
        attempts=rec.attempts,
        max_retries=rec.max_retries,
        started_at=iso(rec.started_ms),
        finished_at=iso(rec.finished_ms),
        next_attempt_at=iso(rec.next_attempt_ms),
        errors=[ErrorObject(**e) for e in rec.errors],
        **_outputs(rec, broker),
        required_action=required_action(rec),
        priority=rec.priority,
    )


def new_task_run(fields: Mapping[str, str | int], broker: Broker | None = None) -> TaskRun:
    """The TaskRun of a run just made (run.NewRun's fields), without reading it back;
    with `broker`, saying why it will wait when no live worker serves it."""
    record = RunRecord({**{k: str(v) for k, v in fields.items()}, "status": RunStatus.queued.value})
    return to_task_run(record, broker, explain="workers" if broker is not None else "")


def _outputs(rec: RunRecord, broker: Broker | None) -> dict[str, Any]:
    total = rec.outputs_count
    if broker is None or not total:
        return {"outputs_count": total, "outputs_next": paths.run_outputs(rec.id) if total else None}
    first = outputs.page(broker, rec)
    return {
        "outputs": [OutputFile(**f) for f in first.files],
        "outputs_count": total,
        "outputs_next": paths.run_outputs(rec.id, first.next_cursor) if first.next_cursor else None,
    }


def required_action(rec: RunRecord) -> RequiredAction | None:
    """The question a waiting run shows (action.py), None when it is not waiting."""
    question = rec.required_action
    if question is None:
        return None
    return RequiredAction(
        message=question["message"],
        schema=question["schema"],
        asked_at=iso(rec.asked_ms) or "",
        expires_at=iso(rec.answer_deadline_ms) or "",
    )


def to_result(rec: RunRecord, broker: Broker | None = None) -> TaskRunResult:
    output = TaskRunOutput(type=rec.output_type, content=rec.output)  # type: ignore[arg-type]
    return TaskRunResult(run=to_task_run(rec, broker), output=output)


def to_input(rec: RunRecord) -> dict[str, Any]:
    """The run as it was asked for (GET …/input), in the RunInput wire shape."""
    shaped: dict[str, Any] = {"input": rec.input, "processor": rec.processor}
    if rec.metadata:
        shaped["metadata"] = rec.metadata
    if rec.output_schema:
        shaped["task_spec"] = {"output_schema": {"type": "json", "json_schema": rec.output_schema}}
    return shaped


def group_status(rec: GroupRecord) -> TaskGroupStatus:
    """The group's status from its counters alone: O(1) however many runs it holds."""
    counts = rec.counts
    total = rec.num_task_runs
    active = sum(counts.get(s.value, 0) for s in ACTIVE)
    if total == 0:
        message = "no runs yet"
    elif active:
        message = f"{total - active} of {total} runs finished"
    else:
        message = f"all {total} runs finished"
    return TaskGroupStatus(
        num_task_runs=total,
        task_run_status_counts=counts,
        is_active=active > 0,
        status_message=message,
        modified_at=iso(rec.modified_ms),
    )


def to_task_group(rec: GroupRecord) -> TaskGroup:
    return TaskGroup(
        taskgroup_id=rec.id, status=group_status(rec), metadata=rec.metadata, created_at=iso(rec.created_ms)
    )


# -- the run as it was at an event (events.py) --------------------------------

# What set_status writes with each state event: the run's fields that change over its
# life, as they were then (see scripts/_lib.lua).
_AS_OF = {"a": "attempts", "s": "started_ms", "n": "next_attempt_ms"}
_CHANGING = ("attempts", "started_ms", "next_attempt_ms", "finished_ms", "error", "errors", "required_action")


def as_of(rec: RunRecord, at_ms: int, event: dict[str, str]) -> RunRecord:
    """The run as it was when a state event was written: its status, attempts, times
    and errors then; what never changes (input, metadata, ...) and its files as now."""
    status = RunStatus(event.get("status") or rec.status.value)
    raw = {k: v for k, v in rec.raw.items() if k not in _CHANGING}
    raw.update({"status": status.value, "modified_ms": str(at_ms)})
    raw.update({name: event[short] for short, name in _AS_OF.items() if event.get(short)})
    if status.is_terminal:
        raw["finished_ms"] = str(at_ms)
    seen = rec.errors[: int(event.get("e") or 0)]
    if seen:
        raw["errors"] = dumps(seen)
        if status is not RunStatus.completed:
            raw["error"] = dumps(seen[-1])
    if status is RunStatus.action_required and rec.raw.get("required_action"):
        raw["required_action"] = rec.raw["required_action"]
    return RunRecord(raw, rec.blobs)


def group_as_of(at_ms: int, event: dict[str, str]) -> GroupRecord:
    """A group as of a task_group_status event: its counters then (set_status writes them)."""
    counts = dict(pair.split("=", 1) for pair in event.get("counts", "").split(",") if "=" in pair)
    return GroupRecord({**counts, "modified_ms": str(at_ms)})
