"""Runs that wait for a person: `current_run().ask()` in a processor, and the answer
that lets the run go on (POST /v1/tasks/runs/{id}/action, `RunHandle.answer()`).

The first time a processor asks, its attempt ends and the run waits in
`action_required`, holding no worker, with the question on the run as
`required_action`. An answer (checked against the question's schema) joins the
run's `answers` and puts the run back on its queue; the processor runs again from
the start and its i-th `ask()` returns answer i. Waiting does not spend a retry. A
run left unanswered for `action_timeout_s` fails (see scripts/reap.lua).

Record fields while waiting: `required_action` (JSON: message, schema),
`asked_ms` and `answer_deadline_ms` (Redis's clock, set by finish.lua); `answers`
(JSON list, in the order given; a payload, kept as payload.py says).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import catalog, errors, ids, payload, run
from .broker import Broker, translated
from .jsontext import dumps, request_json
from .outputs import payloads
from .record import RunRecord

if TYPE_CHECKING:
    from .context import CurrentRun

MAX_MESSAGE_CHARS = 2000


def ask(current: CurrentRun, message: str, schema: dict[str, Any] | None = None) -> Any:
    """The answer to this run's next question, if one was given; otherwise ends the
    attempt (raising errors.ActionRequired) with the run waiting for it. A schema
    taskq will not use (catalog.check_schema: the limits every client schema has, as
    the answer is checked against it at the gateway) raises SchemaRefused, which fails
    the run without a retry."""
    schema = {} if schema is None else schema
    dumps(schema)  # ValueError for NaN or an infinity: not JSON
    catalog.check_schema(schema, "ask(schema)")
    index = current.asked
    current.asked += 1
    if index < len(current.answers):
        return current.answers[index]
    raise errors.ActionRequired({"message": str(message)[:MAX_MESSAGE_CHARS], "schema": schema})


def answer(broker: Broker, tenant: str, run_id: str, value: Any) -> RunRecord:
    """Gives the waiting run its answer: 422 (naming the field) when it does not fit
    the question's schema, 409 when the run is not waiting; returns the record."""
    record = run.load(broker, tenant, run_id)
    question = record.required_action
    if question is None:
        status = record.status.value
        raise errors.Conflict(f"run {run_id} is {status}, not waiting for an answer", {"status": status})
    asked = record.raw["required_action"]
    catalog.check(value, question["schema"], "input")
    before = record.payload_text("answers")
    given = request_json(value, "input")
    # Appended as text: the answers given before stay as they were written.
    stored = payloads.store(broker, run_id, "answers", f"{before[:-1]},{given}]" if before else f"[{given}]")
    settings = broker.settings
    try:
        with translated():
            reply = broker.scripts.answer(
                ids.partition_of(run_id),
                run_id,
                settings.retention_s,
                broker.rq_mirror,
                stored,
                asked,
                payload.to_bytes(record.raw.get("answers") or ""),
                "1" if payloads.offloaded(stored) else "",
            )
    except BaseException:
        payloads.discard(broker, [stored])
        raise
    if isinstance(reply, list):
        payloads.discard(broker, [stored])
        raise errors.Conflict(f"run {run_id} is {reply[1]}, not waiting for this answer", {"status": reply[1]})
    return run.load(broker, tenant, run_id)
