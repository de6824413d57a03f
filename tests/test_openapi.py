"""/openapi.json is generated from the routes: every route is in it, with its path
parameters, query parameters, bodies and error answers; /docs serves Swagger UI 5
without the network (tests/test_dashboard_browser.py sees it render)."""

from __future__ import annotations

from taskq import openapi
from taskq.gateway import create_app


def test_every_route_is_described_in_openapi(client, broker):
    doc = client.get("/openapi.json").json
    app = create_app(broker.settings)
    for rule in app.url_map.iter_rules():
        if not openapi.documented(rule.endpoint):
            continue
        path = openapi.openapi_path(rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = doc["paths"].get(path, {}).get(method.lower())
            assert op is not None, f"{method} {path} is missing from /openapi.json"
            assert "not yet described" not in op["summary"], (
                f"{method} {path} ({rule.endpoint}) has no entry in openapi.OPERATIONS"
            )
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(rule.arguments), path


def test_the_document_has_both_prefixes_parameters_bodies_and_errors(client):
    doc = client.get("/openapi.json").json

    assert (
        "/v1beta/tasks/groups/{group_id}/events" in doc["paths"]
        and "/v1/tasks/groups/{group_id}/events" in doc["paths"]
    )
    run = doc["paths"]["/v1/tasks/runs/{run_id}/result"]["get"]
    assert {p["name"] for p in run["parameters"]} == {"run_id", "timeout"}
    assert next(p for p in run["parameters"] if p["name"] == "run_id")["schema"]["pattern"]
    runs = doc["paths"]["/v1beta/tasks/groups/{group_id}/runs"]
    assert {"last_event_id", "status", "include_input", "include_output"} <= {
        p["name"] for p in runs["get"]["parameters"]
    }
    assert runs["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("TaskGroupRunRequest")
    assert doc["paths"]["/v1/tasks/runs"]["post"]["responses"]["422"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("ErrorResponse")


def test_docs_serve_swagger_ui_from_the_package_under_a_strict_content_security_policy(client):
    page = client.get("/docs")
    assert page.status_code == 200 and b"http" not in page.data.split(b"<body>")[1]
    assert b"<script>" not in page.data  # every script is a file, so the policy needs no 'unsafe-inline' for scripts
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "connect-src 'self'" in policy
    with client.get("/docs/docs.js") as js:
        assert js.status_code == 200 and b'"/openapi.json"' in js.data and b"validatorUrl: null" in js.data
    with client.get("/docs/swagger-ui-bundle.js") as js:
        assert js.status_code == 200 and js.data
    assert client.get("/docs/..%2fpyproject.toml").status_code == 404
    assert client.get("/docs/VERSION").status_code == 404  # only the files the page loads


def test_the_dashboard_is_not_part_of_the_api_document(client):
    doc = client.get("/openapi.json").json
    assert not [p for p in doc["paths"] if p.startswith("/dashboard")]
    listed = doc["paths"]["/v1/tasks/runs"]["get"]
    assert {"status", "processor", "limit", "cursor", "created_after", "created_before"} <= {
        p["name"] for p in listed["parameters"]
    }
    assert listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("TaskRunList")
