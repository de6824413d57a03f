"""Server spans for the routes that make runs (tracing.py): `@traced` marks a view;
its span is current while the view runs, so each run it makes stores the span's
context (run.prepare), and ends with the answer's status, whichever handler made it.
Other routes, and every route when traces are off, cost a flag check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request

from .. import tracing

View = TypeVar("View", bound=Callable[..., Any])


def traced(view: View) -> View:
    view.taskq_traced = True  # type: ignore[attr-defined]
    return view


def install(app: Flask) -> None:
    """Hooks the spans into `app`: after the hooks registered before (authentication:
    a refused request makes no span)."""
    app.before_request(_open)
    app.after_request(_answered)
    app.teardown_request(_close)


def _open() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    if not getattr(view, "taskq_traced", False):
        return
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    attributes = {"http.request.method": request.method, "http.route": rule, "url.path": request.path}
    g.taskq_span = tracing.open_server(f"{request.method} {rule}", request.headers.get("traceparent"), attributes)


def _answered(response: Response) -> Response:
    if g.get("taskq_span") is not None:
        g.taskq_status = response.status_code
    return response


def _close(exc: BaseException | None) -> None:
    span = g.pop("taskq_span", None)
    if span is not None:
        span.close(g.pop("taskq_status", 500))
