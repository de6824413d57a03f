"""/openapi.json: the HTTP API, described from the wire models."""

from __future__ import annotations

from typing import Any

from .models import ErrorResponse, RunInput, TaskRun, TaskRunResult

ERRORS = {
    "400": "body is not JSON",
    "401": "no or unknown API key",
    "404": "not found",
    "408": "result not ready within timeout",
    "409": "illegal state change",
    "410": "expired",
    "413": "body too large",
    "422": "invalid input",
    "429": "queue full",
    "503": "Redis unreachable",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(summary: str, ok: str, schema: str | None, request: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok: {"description": "ok"}}}
    if schema:
        op["responses"][ok]["content"] = {"application/json": {"schema": _ref(schema)}}
    if request:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(request)}}}
    for code, text in ERRORS.items():
        op["responses"][code] = {"description": text, "content": {"application/json": {"schema": _ref("ErrorResponse")}}}
    return op


PATHS: dict[str, dict[str, Any]] = {
    "/v1/tasks/runs": {"post": _op("create a run", "202", "TaskRun", "RunInput")},
    "/v1/tasks/runs/{run_id}": {"get": _op("the run", "200", "TaskRun")},
    "/v1/tasks/runs/{run_id}/input": {"get": _op("the run's input", "200", "RunInput")},
    "/v1/tasks/runs/{run_id}/result": {"get": _op("wait for the result (?timeout=S)", "200", "TaskRunResult")},
    "/v1/tasks/runs/{run_id}/events": {"get": _op("SSE: progress and state changes", "200", None)},
    "/v1/tasks/runs/{run_id}/cancel": {"post": _op("cancel the run", "200", "TaskRun")},
    "/v1/tasks/runs/{run_id}/webhook-deliveries": {"get": _op("every webhook delivery attempt", "200", None)},
    "/v1/tasks/runs/{run_id}/webhook-deliveries/{delivery_id}/redeliver": {
        "post": _op("send a dead-lettered webhook delivery again", "202", None)
    },
    "/v1/webhook-secret": {"get": _op("the tenant's default webhook signing secret", "200", None)},
    "/v1/tasks/groups": {"post": _op("create a task group", "200", None)},
    "/v1/tasks/groups/{taskgroup_id}": {"get": _op("the group and its status", "200", None)},
    "/v1/tasks/groups/{taskgroup_id}/runs": {
        "post": _op("add up to 1,000 runs, all or nothing", "200", None),
        "get": _op("SSE: the group's runs in the order added", "200", None),
    },
    "/v1/tasks/groups/{taskgroup_id}/runs/{run_id}": {"get": _op("one run of the group", "200", "TaskRun")},
    "/v1/tasks/groups/{taskgroup_id}/events": {"get": _op("SSE: group status and run state events", "200", None)},
    "/v1/tasks/groups/{taskgroup_id}/cancel": {"post": _op("cancel every active run of the group", "200", None)},
    "/v1/async/{upstream}/{path}": {"post": _op("call an upstream asynchronously", "202", None)},
    "/healthz": {"get": {"summary": "process is up", "responses": {"200": {"description": "ok"}}}},
    "/readyz": {"get": {"summary": "Redis reachable", "responses": {"200": {"description": "ok"}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "ok"}}}},
}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (TaskRun, TaskRunResult, RunInput, ErrorResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "taskq", "version": "0.1.0"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"apiKey": []}],
        "paths": PATHS,
    }
