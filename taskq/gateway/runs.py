"""/v1/tasks/runs: create, read, wait for, and cancel runs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from .. import errors, run
from ..models import RunInput, parse
from . import body, broker, catalog, tenant

bp = Blueprint("runs", __name__, url_prefix="/v1/tasks/runs")


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.post("")
def create() -> Response:
    req = parse(RunInput, body())
    new = run.prepare(broker(), catalog(), tenant(), req)
    ids, created = run.create(broker(), [new], tenant=tenant(), idempotency_key=request.headers.get("Idempotency-Key"))
    if created:
        return _json(run.new_task_run(new).model_dump_json(), 202)
    existing = run.to_task_run(run.load(broker(), tenant(), ids[0]))
    return _json(existing.model_dump_json(), 202, {"Idempotent-Replayed": "true"})


@bp.get("/<run_id>")
def retrieve(run_id: str) -> dict[str, Any]:
    return run.to_task_run(run.load(broker(), tenant(), run_id)).model_dump(mode="json")


@bp.get("/<run_id>/input")
def retrieve_input(run_id: str) -> dict[str, Any]:
    record = run.load(broker(), tenant(), run_id)
    return run.to_input(record)


@bp.get("/<run_id>/result")
def result(run_id: str) -> dict[str, Any]:
    timeout_s = _seconds("timeout", broker().settings.result_timeout_s)
    return run.result(broker(), tenant(), run_id, timeout_s).model_dump(mode="json")


@bp.post("/<run_id>/cancel")
def cancel(run_id: str) -> dict[str, Any]:
    return run.to_task_run(run.cancel(broker(), tenant(), run_id)).model_dump(mode="json")


def _json(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """An answer serialised once, by the model itself."""
    return Response(text, status, headers, mimetype="application/json")


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
