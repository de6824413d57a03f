"""/openapi.json: the HTTP API, generated from the app's routes and the wire models.

Every rule of `app.url_map` becomes an operation (a route nobody described still
appears, with the generic answers, and tests/test_openapi.py fails until it is
described); path parameters come from the rule and carry the id patterns; bodies and
answers are the pydantic models' JSON Schemas. apispec assembles and checks the
document (OpenAPI 3.1).
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from flask import Flask
from pydantic import BaseModel

from .models import (
    ActionAnswer,
    ErrorResponse,
    OutputFileList,
    RunInput,
    RunStatus,
    TaskGroup,
    TaskGroupCreate,
    TaskGroupRunRequest,
    TaskGroupRunResponse,
    TaskRun,
    TaskRunList,
    TaskRunResult,
    WebhookDelivery,
)

MODELS: tuple[type[BaseModel], ...] = (
    TaskRun,
    TaskRunResult,
    RunInput,
    ErrorResponse,
    TaskGroup,
    TaskGroupCreate,
    TaskGroupRunRequest,
    TaskGroupRunResponse,
    WebhookDelivery,
    ActionAnswer,
    TaskRunList,
    OutputFileList,
)

ERRORS = {
    "400": "body is not JSON",
    "401": "no or unknown API key",
    "403": "an output file URL whose signature does not hold",
    "404": "not found",
    "405": "method not allowed",
    "408": "result not ready within timeout",
    "409": "illegal state change",
    "410": "expired",
    "413": "body too large",
    "422": "invalid input",
    "429": "queue full, rate limit, or too many open streams (with Retry-After)",
    "503": "Redis unreachable, or out of memory: new runs refused past the high-water mark (with Retry-After)",
}
PUBLIC_ENDPOINTS = {
    "health.healthz",
    "health.readyz",
    "health.metrics_view",
    "health.openapi_view",
    "health.docs",
    "outputs.download",
}
SKIPPED_ENDPOINTS = {"static", "health.docs_static", "health.docs_script"}
# The dashboard's pages are a web UI signed in with a cookie, not part of the API.
SKIPPED_BLUEPRINTS = ("dashboard.",)


def documented(endpoint: str) -> bool:
    """Whether a route belongs in the API document (the one place that says so)."""
    return endpoint not in SKIPPED_ENDPOINTS and not endpoint.startswith(SKIPPED_BLUEPRINTS)


PATH_PATTERNS = {
    "run_id": "^trun_[0-9a-f]{32}$",
    "group_id": "^tgrp_[0-9a-f]{32}$",
    "delivery_id": r"^trun_[0-9a-f]{32}\.[0-9]{1,9}$",
    "upstream": "^[^/]+$",
    "uid": "^[0-9a-f]{16}$",
    "name": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$",
}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TIMEOUT = _q("timeout", {"type": "number", "minimum": 0, "maximum": 3600}, "seconds to wait")
LAST_EVENT_ID = _q(
    "last_event_id", {"type": "string", "pattern": "^[0-9]{1,20}(-[0-9]{1,20})?$"}, "resume after this event id"
)
FLAG = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}
STATUS = _q("status", {"type": "string", "enum": [s.value for s in RunStatus]}, "only runs in this status")
# One server-sent event as a client parses it; `data` is a JSON object, its `type`
# saying which event it is (task_run.state, task_group_status, error, ...).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "contentMediaType": "application/json"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
SSE = {"text/event-stream": {"schema": {"type": "array", "items": SSE_EVENT}, "itemSchema": SSE_EVENT}}
OBJECT = {"type": "object"}


def _json(schema: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
        }
    }


# endpoint -> (summary, ok status, answer content, request model, query parameters)
Operation = tuple[str, str, dict[str, Any] | None, str | None, list[dict[str, Any]]]
_RUN = "the TaskRun"
OPERATIONS: dict[str, Operation] = {
    "runs.create": (
        "create a run (Idempotency-Key header: the same key returns the first run; fields taskq "
        "does not act on are named in its warnings)",
        "202",
        _json("TaskRun"),
        "RunInput",
        [],
    ),
    "runs.list": (
        "the tenant's runs, newest first, paged by an opaque cursor",
        "200",
        _json("TaskRunList"),
        None,
        [
            STATUS,
            _q("processor", {"type": "string"}, "only runs of this processor"),
            _q("created_after", {"type": "string"}, "RFC 3339 time or epoch ms: runs created at or after it"),
            _q("created_before", {"type": "string"}, "RFC 3339 time or epoch ms: runs created before it"),
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "page size (default 20)"),
            _q("cursor", {"type": "string"}, "from a previous page's next_cursor"),
            {
                "name": "metadata",
                "in": "query",
                "required": False,
                "style": "deepObject",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "metadata.<key>=<value>: only runs whose metadata has it (as text)",
            },
        ],
    ),
    "runs.retrieve": (_RUN, "200", _json("TaskRun"), None, []),
    "runs.retrieve_input": ("the run's input", "200", _json("RunInput"), None, []),
    "runs.result": (
        "wait for the result; 408 if not ready within timeout",
        "200",
        _json("TaskRunResult"),
        None,
        [TIMEOUT],
    ),
    "runs.cancel": ("cancel the run", "200", _json("TaskRun"), None, []),
    "runs.answer": (
        "answer a run waiting in action_required (input checked against its question's schema); "
        "it runs again from the start",
        "200",
        _json("TaskRun"),
        "ActionAnswer",
        [],
    ),
    "outputs.download": (
        "an output file at its signed URL: no API key; Range honoured; inline only for inert types "
        "(text, images, ...), else an attachment; always nosniff and a sandboxing CSP; "
        "403 tampered, 410 expired",
        "200",
        {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        None,
        [
            _q("expires", {"type": "integer", "minimum": 0}, "when the URL expires (epoch seconds; signed)"),
            _q("sig", {"type": "string"}, "the URL's signature"),
        ],
    ),
    "run_outputs.list": (
        "every output file of the run, in the order saved, with fresh URLs, paged by an opaque cursor",
        "200",
        _json("OutputFileList"),
        None,
        [
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)"),
            _q("cursor", {"type": "string"}, "from a previous page's next_cursor"),
        ],
    ),
    "run_events.run_events": ("SSE: progress and state changes", "200", SSE, None, [TIMEOUT, LAST_EVENT_ID]),
    "webhook_deliveries.list_deliveries": (
        "every webhook delivery and attempt",
        "200",
        _json(
            {
                "type": "object",
                "properties": {
                    "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookDelivery"}}
                },
                "required": ["deliveries"],
            }
        ),
        None,
        [],
    ),
    "webhook_deliveries.redeliver": ("send a dead-lettered delivery again", "202", _json("WebhookDelivery"), None, []),
    "webhook_secret.webhook_secret": (
        "the tenant's default signing secret",
        "200",
        _json({"type": "object", "properties": {"secret": {"type": "string"}}, "required": ["secret"]}),
        None,
        [],
    ),
    "groups.create": ("create a task group", "200", _json("TaskGroup"), "TaskGroupCreate", []),
    "groups.retrieve": ("the group and its status", "200", _json("TaskGroup"), None, []),
    "groups.add_runs": (
        "add up to 1,000 runs, all or nothing",
        "200",
        _json("TaskGroupRunResponse"),
        "TaskGroupRunRequest",
        [],
    ),
    "groups.get_runs": (
        "SSE: the group's runs in the order added",
        "200",
        SSE,
        None,
        [
            LAST_EVENT_ID,
            STATUS,
            _q("include_input", FLAG, "add each run's input"),
            _q("include_output", FLAG, "add each run's output"),
        ],
    ),
    "groups.retrieve_run": ("one run of the group", "200", _json("TaskRun"), None, []),
    "groups.group_events": ("SSE: group status and run state events", "200", SSE, None, [TIMEOUT, LAST_EVENT_ID]),
    "groups.cancel": ("cancel every active run of the group", "200", _json("TaskGroup"), None, []),
    "proxy.call": (
        "call a configured upstream asynchronously; 202 with the run id",
        "202",
        _json(
            {
                "type": "object",
                "properties": {"run_id": {"type": "string"}, "status": {"type": "string"}},
                "required": ["run_id", "status"],
            }
        ),
        None,
        [_q("webhookEndpoint", {"type": "string"}, "receives the upstream's response body")],
    ),
    "health.healthz": ("the process is up", "200", _json(OBJECT), None, []),
    "health.readyz": ("Redis is reachable", "200", _json(OBJECT), None, []),
    "health.metrics_view": ("Prometheus metrics", "200", {"text/plain": {"schema": {"type": "string"}}}, None, []),
    "health.openapi_view": ("this document", "200", _json(OBJECT), None, []),
    "health.docs": ("the API reference (Swagger UI)", "200", {"text/html": {"schema": {"type": "string"}}}, None, []),
}
_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """/v1/tasks/runs/<run_id> -> /v1/tasks/runs/{run_id}"""
    return _RULE_ARG.sub(r"{\1}", rule)


def _endpoint(endpoint: str) -> str:
    """A /v1beta alias is described as its /v1 route: groups_beta.create as groups.create."""
    return endpoint.replace("_beta.", ".", 1)


def document(app: Flask) -> dict[str, Any]:
    spec = APISpec(title="taskq", version="0.1.0", openapi_version="3.1.0")
    spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header", "name": "x-api-key"})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in _schemas().items():
        spec.components.schema(name, schema)
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if not documented(rule.endpoint):
            continue
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, sorted(rule.arguments), method)
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict() | {"security": [{"apiKey": []}, {"bearer": []}]}


def _operation(endpoint: str, arguments: list[str], method: str) -> dict[str, Any]:
    summary, ok, content, request_model, query = OPERATIONS.get(
        _endpoint(endpoint), (f"{endpoint} (not yet described)", "200", None, None, [])
    )
    responses: dict[str, Any] = {ok: {"description": "ok"}}
    if content:
        responses[ok]["content"] = content
    for code, text in ERRORS.items():
        responses[code] = {"description": text, "content": _json("ErrorResponse")}
    parameters = [
        {
            "name": arg,
            "in": "path",
            "required": True,
            "schema": {"type": "string", **({"pattern": PATH_PATTERNS[arg]} if arg in PATH_PATTERNS else {})},
        }
        for arg in arguments
    ] + query
    op: dict[str, Any] = {"operationId": f"{endpoint}.{method.lower()}", "summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if request_model:
        op["requestBody"] = {"required": True, "content": _json(request_model)}
    if _endpoint(endpoint) in PUBLIC_ENDPOINTS:
        op["security"] = []
    return op


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
