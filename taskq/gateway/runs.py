"""/v1/tasks/runs: create, read, wait for, answer and cancel runs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from .. import action, errors, group, run, run_list
from ..models import RunInput, parse
from . import body, broker, catalog, slots, tenant

bp = Blueprint("runs", __name__, url_prefix="/v1/tasks/runs")


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.post("")
def create() -> Response:
    raw = body()
    req = parse(RunInput, raw)
    new = run.prepare(broker(), catalog(), tenant(), req)
    key = request.headers.get("Idempotency-Key")
    ids, created = run.create(broker(), [new], tenant=tenant(), idempotency_key=key, request=raw)
    if created:
        return _json(run.new_task_run(new).model_dump_json(), 202)
    existing = run.to_task_run(run.load(broker(), tenant(), ids[0]), broker())
    return _json(existing.model_dump_json(), 202, {"Idempotent-Replayed": "true"})


@bp.get("", endpoint="list")
def list_runs() -> Response:
    """The tenant's runs, newest first, paged by an opaque cursor (see run_list.py)."""
    limit = _int("limit", run_list.DEFAULT_LIMIT)
    flt = run_list_filter(request.args)
    page = run_list.list_runs(broker(), tenant(), flt, limit, request.args.get("cursor") or None)
    return _json(page.model_dump_json(), 200)


def run_list_filter(args: Any) -> run_list.RunFilter:
    """The list filters from query arguments (shared with the dashboard)."""
    return run_list.RunFilter(
        status=group.parse_status_filter(args.get("status")),
        processor=args.get("processor") or None,
        created_after_ms=run_list.parse_time("created_after", args.get("created_after")),
        created_before_ms=run_list.parse_time("created_before", args.get("created_before")),
        metadata=tuple((k.removeprefix("metadata."), v) for k, v in args.items() if k.startswith("metadata.")),
    )


@bp.get("/<run_id>")
def retrieve(run_id: str) -> dict[str, Any]:
    return run.to_task_run(run.load(broker(), tenant(), run_id), broker()).model_dump(mode="json")


@bp.get("/<run_id>/input")
def retrieve_input(run_id: str) -> dict[str, Any]:
    record = run.load(broker(), tenant(), run_id)
    return run.to_input(record)


@bp.get("/<run_id>/result")
def result(run_id: str) -> dict[str, Any]:
    timeout_s = _seconds("timeout", broker().settings.result_timeout_s)
    with slots().holding(tenant()):
        return run.result(broker(), tenant(), run_id, timeout_s).model_dump(mode="json")


@bp.post("/<run_id>/cancel")
def cancel(run_id: str) -> dict[str, Any]:
    return run.to_task_run(run.cancel(broker(), tenant(), run_id), broker()).model_dump(mode="json")


@bp.post("/<run_id>/action")
def answer(run_id: str) -> dict[str, Any]:
    """Answers a run waiting in action_required; it goes back to its queue."""
    req = parse(action.ActionAnswer, body())
    return run.to_task_run(action.answer(broker(), tenant(), run_id, req.input), broker()).model_dump(mode="json")


def _json(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """An answer serialised once, by the model itself."""
    return Response(text, status, headers, mimetype="application/json")


def _int(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.ValidationFailed(f"{name}: must be an integer", {"field": name}) from None


def _seconds(name: str, default: float, maximum: float = 3600) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.ValidationFailed(f"{name}: must be a number of seconds", {"field": name}) from None
    if not 0 <= value <= maximum:
        raise errors.ValidationFailed(f"{name}: must be between 0 and {maximum:g} seconds", {"field": name})
    return value
