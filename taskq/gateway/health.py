"""/healthz, /readyz, /metrics, /openapi.json and /docs: unauthenticated."""

from __future__ import annotations

import os
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Response, current_app, send_from_directory

from .. import metrics, openapi
from .http import broker, error_response

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


# Swagger UI 5, which renders OpenAPI 3.1 (4 cannot), as the flask-swagger-ui package
# vendors it (its version is Swagger UI's): served from the package, nothing from a CDN.
SWAGGER_UI = os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist")
DOCS_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskq API</title>
<link rel="icon" href="/docs/favicon-32x32.png"><link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script><script src="/docs/docs.js"></script>
</body></html>
"""
# No validator badge: Swagger UI would fetch it from validator.swagger.io.
DOCS_SCRIPT = 'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null});\n'
# The page loads only its own files and talks only to this gateway ("Try it out"); no
# inline script or style runs (Swagger UI 5 needs none: the browser test sees no
# violation).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/docs")
def docs() -> Response:
    return Response(DOCS_PAGE, content_type="text/html; charset=utf-8", headers={"Content-Security-Policy": DOCS_CSP})


@bp.get("/docs/docs.js")
def docs_script() -> Response:
    return Response(
        DOCS_SCRIPT, content_type="text/javascript; charset=utf-8", headers={"Cache-Control": "max-age=3600"}
    )


@bp.get("/docs/<name>")
def docs_static(name: str) -> Response:
    if name not in DOCS_FILES:
        return error_response(404, "no such file")
    return send_from_directory(SWAGGER_UI, name, max_age=3600)
