"""/v1/tasks/groups: task groups and their streams; and /v1/tasks/runs/{id}/events,
a run's own stream. Both are served under /v1beta too, where the SDK's beta
resources (parallel-web 0.3 to 0.6) call them; its beta run create and result call
the /v1 paths."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request

from .. import events, group, run
from ..models import parse
from . import body, broker, catalog, slots, tenant
from .runs import _seconds

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def blueprints() -> list[Blueprint]:
    return [
        _groups("groups", "/v1/tasks/groups"),
        _groups("groups_beta", "/v1beta/tasks/groups"),
        _run_events("run_events", "/v1/tasks/runs"),
        _run_events("run_events_beta", "/v1beta/tasks/runs"),
    ]


def _groups(name: str, prefix: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=prefix)

    @bp.post("")
    def create() -> tuple[dict[str, Any], int]:
        req = parse(group.TaskGroupCreate, body())
        return _shape(group.create(broker(), tenant(), req)), 200

    @bp.get("/<group_id>")
    def retrieve(group_id: str) -> dict[str, Any]:
        return _shape(group.load(broker(), tenant(), group_id))

    @bp.post("/<group_id>/runs")
    def add_runs(group_id: str) -> dict[str, Any]:
        req = parse(group.TaskGroupRunRequest, body())
        added = group.add_runs(broker(), catalog(), tenant(), group_id, req)
        return added.model_dump(mode="json")

    @bp.get("/<group_id>/runs")
    def get_runs(group_id: str) -> Response:
        stream = events.group_runs(
            broker(),
            tenant(),
            group_id,
            last_event_id=_last_event_id(),
            status=request.args.get("status"),
            include_input=_flag("include_input"),
            include_output=_flag("include_output"),
        )
        return _sse(stream)

    @bp.get("/<group_id>/runs/<run_id>")
    def retrieve_run(group_id: str, run_id: str) -> dict[str, Any]:
        return run.to_task_run(group.run_of(broker(), tenant(), group_id, run_id), broker()).model_dump(mode="json")

    @bp.get("/<group_id>/events")
    def group_events(group_id: str) -> Response:
        timeout_s = _seconds("timeout", events.MAX_STREAM_S, events.MAX_STREAM_S)
        return _sse(events.group_events(broker(), tenant(), group_id, _last_event_id(), timeout_s))

    @bp.post("/<group_id>/cancel")
    def cancel(group_id: str) -> dict[str, Any]:
        return _shape(group.cancel(broker(), tenant(), group_id))

    return bp


def _run_events(name: str, prefix: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=prefix)

    @bp.get("/<run_id>/events")
    def run_events(run_id: str) -> Response:
        timeout_s = _seconds("timeout", events.MAX_STREAM_S, events.MAX_STREAM_S)
        return _sse(events.run_events(broker(), tenant(), run_id, _last_event_id(), timeout_s))

    return bp


def _shape(record: dict[str, str]) -> dict[str, Any]:
    return group.to_task_group(record).model_dump(mode="json")


def _sse(stream: Iterator[str]) -> Response:
    """The stream as an SSE response holding one of the tenant's slots until it closes."""
    return Response(slots().stream(tenant(), stream), mimetype="text/event-stream", headers=SSE_HEADERS)


def _last_event_id() -> str | None:
    # EventSource resends the id it saw last as a header when it reconnects.
    return request.args.get("last_event_id") or request.headers.get("Last-Event-ID")


def _flag(name: str) -> bool:
    return request.args.get(name, "").lower() in {"1", "true", "yes"}
