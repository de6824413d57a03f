"""/healthz, /readyz, /metrics, /openapi.json and /docs: unauthenticated."""

from __future__ import annotations

from typing import Any

import swagger_ui_bundle
from flask import Blueprint, Response, current_app, send_from_directory

from .. import metrics, openapi
from . import broker, error_response

bp = Blueprint("health", __name__)


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Any:
    if not broker().reachable():
        return error_response(503, "Redis is unreachable", retry_after_s=1)
    return {"status": "ready"}


@bp.get("/metrics")
def metrics_view() -> Response:
    text, content_type = metrics.render(broker())
    return Response(text, content_type=content_type)


@bp.get("/openapi.json")
def openapi_view() -> dict[str, Any]:
    return openapi.document(current_app)


# Swagger UI, vendored by the swagger-ui-bundle package: nothing is fetched from a CDN.
DOCS_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskq API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div><script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""


@bp.get("/docs")
def docs() -> Response:
    return Response(DOCS_PAGE, content_type="text/html; charset=utf-8")


@bp.get("/docs/<name>")
def docs_static(name: str) -> Response:
    if name not in DOCS_FILES:
        return error_response(404, "no such file")
    return send_from_directory(swagger_ui_bundle.swagger_ui_path, name, max_age=3600)
