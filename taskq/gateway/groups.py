"""/v1/tasks/groups: task groups and their streams; and /v1/tasks/runs/{id}/events,
a run's own stream. Both are served under /v1beta too, where the SDK's beta
resources (parallel-web 0.3 to 0.6) call them; its beta run create and result call
the /v1 paths."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from .. import events, group, paths, wire
from ..jsontext import parse
from ..models import TaskGroupCreate, TaskGroupRunRequest
from ..record import GroupRecord
from .http import body, broker, catalog, flag, last_event_id, seconds_arg, sse_response, tenant
from .traces import traced


def blueprints() -> list[Blueprint]:
    return [
        _groups("groups", paths.GROUPS),
        _groups("groups_beta", paths.BETA_GROUPS),
        _run_events("run_events", paths.RUNS),
        _run_events("run_events_beta", paths.BETA_RUNS),
    ]


def _groups(name: str, prefix: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=prefix)

    @bp.post("")
    def create() -> tuple[dict[str, Any], int]:
        req = parse(TaskGroupCreate, body())
        return _shape(group.create(broker(), tenant(), req)), 200

    @bp.get("/<group_id>")
    def retrieve(group_id: str) -> dict[str, Any]:
        return _shape(group.load(broker(), tenant(), group_id))

    @bp.post("/<group_id>/runs")
    @traced
    def add_runs(group_id: str) -> dict[str, Any]:
        req = parse(TaskGroupRunRequest, body())
        added = group.add_runs(broker(), catalog(), tenant(), group_id, req)
        return added.model_dump(mode="json")

    @bp.get("/<group_id>/runs")
    def get_runs(group_id: str) -> Response:
        stream = events.group_runs(
            broker(),
            tenant(),
            group_id,
            last_event_id=last_event_id(),
            status=request.args.get("status"),
            include_input=flag("include_input"),
            include_output=flag("include_output"),
        )
        return sse_response(stream)

    @bp.get("/<group_id>/runs/<run_id>")
    def retrieve_run(group_id: str, run_id: str) -> dict[str, Any]:
        return wire.to_task_run(group.run_of(broker(), tenant(), group_id, run_id), broker()).model_dump(mode="json")

    @bp.get("/<group_id>/events")
    def group_events(group_id: str) -> Response:
        timeout_s = seconds_arg("timeout", events.MAX_STREAM_S, events.MAX_STREAM_S)
        return sse_response(events.group_events(broker(), tenant(), group_id, last_event_id(), timeout_s))

    @bp.post("/<group_id>/cancel")
    def cancel(group_id: str) -> dict[str, Any]:
        return _shape(group.cancel(broker(), tenant(), group_id))

    return bp


def _run_events(name: str, prefix: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=prefix)

    @bp.get("/<run_id>/events")
    def run_events(run_id: str) -> Response:
        timeout_s = seconds_arg("timeout", events.MAX_STREAM_S, events.MAX_STREAM_S)
        return sse_response(events.run_events(broker(), tenant(), run_id, last_event_id(), timeout_s))

    return bp


def _shape(record: GroupRecord) -> dict[str, Any]:
    return wire.to_task_group(record).model_dump(mode="json")
