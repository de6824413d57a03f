"""/v1/tasks/runs: create, read, wait for, answer and cancel runs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from .. import action, paths, run, run_list, wire
from ..jsontext import parse
from ..models import ActionAnswer, RunInput
from .http import body, broker, catalog, int_arg, json_response, run_filter, seconds_arg, slots, tenant
from .traces import traced

bp = Blueprint("runs", __name__, url_prefix=paths.RUNS)


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.post("")
@traced
def create() -> Response:
    raw = body()
    req = parse(RunInput, raw)
    key = request.headers.get("Idempotency-Key")
    new = run.prepare(broker(), catalog(), tenant(), req, partition=run.partition_of_key(broker(), key))
    ids, created = run.create(broker(), [new], tenant=tenant(), idempotency_key=key, request=raw)
    if created:
        return json_response(wire.new_task_run(new.fields, broker()).model_dump_json(), 202)
    existing = wire.to_task_run(run.load(broker(), tenant(), ids[0]), broker(), explain="all")
    return json_response(existing.model_dump_json(), 202, {"Idempotent-Replayed": "true"})


@bp.get("", endpoint="list")
def list_runs() -> Response:
    """The tenant's runs, newest first, paged by an opaque cursor (see run_list.py)."""
    limit = int_arg("limit", run_list.DEFAULT_LIMIT)
    flt = run_filter(request.args)
    page = run_list.list_runs(broker(), tenant(), flt, limit, request.args.get("cursor") or None)
    return json_response(page.model_dump_json(), 200)


@bp.get("/<run_id>")
def retrieve(run_id: str) -> dict[str, Any]:
    return wire.to_task_run(run.load(broker(), tenant(), run_id), broker(), explain="all").model_dump(mode="json")


@bp.get("/<run_id>/input")
def retrieve_input(run_id: str) -> dict[str, Any]:
    return wire.to_input(run.load(broker(), tenant(), run_id))


@bp.get("/<run_id>/result")
def result(run_id: str) -> dict[str, Any]:
    timeout_s = seconds_arg("timeout", broker().settings.result_timeout_s)
    with slots().holding(tenant()):
        return run.result(broker(), tenant(), run_id, timeout_s).model_dump(mode="json")


@bp.post("/<run_id>/cancel")
def cancel(run_id: str) -> dict[str, Any]:
    return wire.to_task_run(run.cancel(broker(), tenant(), run_id), broker()).model_dump(mode="json")


@bp.post("/<run_id>/action")
def answer(run_id: str) -> dict[str, Any]:
    """Answers a run waiting in action_required; it goes back to its queue."""
    req = parse(ActionAnswer, body())
    return wire.to_task_run(action.answer(broker(), tenant(), run_id, req.input), broker()).model_dump(mode="json")
