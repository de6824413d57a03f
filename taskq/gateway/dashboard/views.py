"""The dashboard's pages. Each parses, calls domain functions, renders a template."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from ... import action, errors, events, group, history, registry, run, run_list, wire
from ...clock import iso, now_ms
from ...models import LEASED, RunStatus
from ...overview import overview
from ...record import RunRecord
from ...webhooks import delivery
from ..http import broker, run_filter, sse_response, tenant
from . import answer_form, formats
from .auth import PREFIX, bp, check_origin, sign_in, sign_out
from .chart import chart

GROUP_RUNS_SHOWN = 200


@bp.app_template_filter("iso")
def _iso(ms: int | None) -> str:
    return iso(ms) or "–"


@bp.app_template_filter("when")
def _when(value: str | int | None) -> str:
    return formats.time_tag(value)


@bp.app_template_filter("duration")
def _duration(seconds: float | None) -> str:
    return formats.duration(seconds)


@bp.app_template_global("took")
def _took(started: str | None, finished: str | None) -> str:
    return formats.duration(formats.between(started, finished))


@bp.app_template_filter("pretty")
def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@bp.errorhandler(errors.TaskqError)
def _error(exc: errors.TaskqError) -> tuple[str, int]:
    return render_template("dashboard/error.html", status=exc.status_code, message=exc.message), exc.status_code


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    messages = {403: "refused: the form was stale or came from another site; reload the page", 401: "sign in first"}
    code = exc.code or 500
    return render_template("dashboard/error.html", status=code, message=messages.get(code, exc.name)), code


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | WerkzeugResponse:
    target = request.args.get("next", "")
    if not target.startswith(PREFIX + "/") and target != PREFIX:
        target = url_for("dashboard.home")  # only ever back into the dashboard
    if request.method == "POST":
        check_origin()  # no signing a visitor in from another site (login CSRF)
        if sign_in(request.form.get("api_key", "").strip()):
            return redirect(target)
        return render_template("dashboard/login.html", failed=True), 401  # type: ignore[return-value]
    return render_template("dashboard/login.html", failed=False)


@bp.post("/logout")
def logout() -> WerkzeugResponse:
    sign_out()
    return redirect(url_for("dashboard.login"))


@bp.get("/")  # (decorators apply from the bottom: "" is registered first, url_for's)
@bp.get("")
def home() -> str:
    return render_template("dashboard/home.html", view=overview(broker()), chart=chart(history.last_hour(broker())))


@bp.get("/runs")
def runs() -> str:
    args = request.args.to_dict()
    for name in ("created_after", "created_before"):
        # <input type=datetime-local> sends no zone: the dashboard speaks UTC.
        if args.get(name) and not (args[name].isascii() and args[name].isdigit()) and not args[name].endswith("Z"):
            args[name] += "Z"
    key, sep, value = args.get("meta", "").partition("=")
    if sep and key.strip():
        args[f"metadata.{key.strip()}"] = value.strip()
    flt = run_filter(args)
    try:
        limit = int(args.get("limit") or 25)
    except ValueError:
        limit = 25
    page = run_list.list_runs(
        broker(), tenant(), flt, max(1, min(limit, run_list.MAX_LIMIT)), args.get("cursor") or None
    )
    query = {k: v for k, v in request.args.items() if k != "cursor" and v}
    return render_template("dashboard/runs.html", page=page, args=request.args, query=query, statuses=list(RunStatus))


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> str:
    return _run_page(run.load(broker(), tenant(), run_id))


def _run_page(record: RunRecord, answer_error: str = "") -> str:
    task_run = wire.to_task_run(record, broker(), explain="all")
    result = wire.to_result(record).output if task_run.status is RunStatus.completed else None
    question = record.required_action
    return render_template(
        "dashboard/run.html",
        run=task_run,
        facts=_facts(record),
        input=record.input,
        output=result,
        deliveries=delivery.for_run(broker(), tenant(), record.id),
        form=answer_form.form_for(question["schema"]) if question else None,
        answer_error=answer_error,
    )


def _facts(record: RunRecord) -> dict[str, Any]:
    """Where and how long the run's latest attempt ran (its worker's host while the
    worker is registered)."""
    ran_s = None
    if record.started_ms and (record.finished_ms or record.status in LEASED):
        ran_s = ((record.finished_ms or now_ms()) - record.started_ms) / 1000
    total_s = (record.finished_ms - record.created_ms) / 1000 if record.finished_ms else None
    host = registry.host_of(broker(), record.worker) if record.worker else None
    return {"queue": record.queue, "worker": record.worker, "host": host, "ran_s": ran_s, "total_s": total_s}


@bp.get("/runs/<run_id>/events")
def run_events(run_id: str) -> Response:
    last = request.headers.get("Last-Event-ID")
    # Counted against the tenant's open streams, as the API's are.
    return sse_response(events.run_events(broker(), tenant(), run_id, last, events.MAX_STREAM_S))


@bp.post("/runs/<run_id>/cancel")
def cancel(run_id: str) -> WerkzeugResponse:
    try:
        record = run.cancel(broker(), tenant(), run_id)
        flash(f"run {record.status.value}")
    except errors.Conflict as exc:
        flash(exc.message)
    return redirect(url_for("dashboard.run_page", run_id=run_id))


@bp.post("/runs/<run_id>/answer")
def answer(run_id: str) -> str | WerkzeugResponse:
    """Answers the run's question as the API does (action.answer); an answer that does
    not fit is shown on the run's page with what was wrong."""
    record = run.load(broker(), tenant(), run_id)
    question = record.required_action
    try:
        if question is None:
            raise errors.Conflict(f"run {run_id} is {record.status.value}, not waiting for an answer")
        action.answer(broker(), tenant(), run_id, answer_form.read(question["schema"], request.form))
    except errors.ValidationFailed as exc:
        return _run_page(record, answer_error=exc.message), 422  # type: ignore[return-value]
    except errors.Conflict as exc:
        flash(exc.message)
        return redirect(url_for("dashboard.run_page", run_id=run_id))
    flash("answer sent: the run is queued again")
    return redirect(url_for("dashboard.run_page", run_id=run_id))


@bp.post("/runs/<run_id>/deliveries/<delivery_id>/redeliver")
def redeliver(run_id: str, delivery_id: str) -> WerkzeugResponse:
    try:
        delivery.redeliver(broker(), tenant(), run_id, delivery_id)
        flash(f"delivery {delivery_id} will be sent again")
    except errors.Conflict as exc:
        flash(exc.message)
    back = request.form.get("back")
    return redirect(
        url_for("dashboard.webhooks") if back == "webhooks" else url_for("dashboard.run_page", run_id=run_id)
    )


@bp.get("/groups")
def groups() -> str:
    shown = [wire.to_task_group(rec) for rec in group.recent(broker(), tenant())]
    return render_template("dashboard/groups.html", groups=shown, statuses=[s.value for s in RunStatus])


@bp.get("/groups/<group_id>")
def group_page(group_id: str) -> str:
    record = group.load(broker(), tenant(), group_id)
    members = []
    for _position, rec in group.run_records(broker(), group_id):
        members.append(wire.to_task_run(rec))
        if len(members) == GROUP_RUNS_SHOWN:
            break
    return render_template(
        "dashboard/group.html",
        group=wire.to_task_group(record),
        runs=members,
        shown=GROUP_RUNS_SHOWN,
        statuses=[s.value for s in RunStatus],
    )


@bp.post("/groups/<group_id>/cancel")
def cancel_group(group_id: str) -> WerkzeugResponse:
    record = group.cancel(broker(), tenant(), group_id)
    flash(f"group cancelled: {wire.group_status(record).status_message}")
    return redirect(url_for("dashboard.group_page", group_id=group_id))


@bp.get("/groups/<group_id>/status")
def group_status(group_id: str) -> dict[str, Any]:
    return wire.group_status(group.load(broker(), tenant(), group_id)).model_dump(mode="json")


@bp.get("/groups/<group_id>/events")
def group_events(group_id: str) -> Response:
    last = request.headers.get("Last-Event-ID")
    return sse_response(events.group_events(broker(), tenant(), group_id, last, events.MAX_STREAM_S))


@bp.get("/webhooks")
def webhooks() -> str:
    return render_template("dashboard/webhooks.html", dead=delivery.dead_for_tenant(broker(), tenant()))
