"""/healthz, /readyz, /metrics and /openapi.json: unauthenticated."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

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
    return openapi.document()
