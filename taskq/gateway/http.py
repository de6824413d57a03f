"""What every route of the gateway shares: the request's tenant and body, its
arguments parsed to 422s, answers and event streams, and the one mapping of errors
to HTTP answers (errors.py draws the tree)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any, cast

import redis
from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import errors, run_list
from ..broker import Broker, as_taskq_error
from ..catalog import Catalog
from ..models import ErrorObject, ErrorResponse, RunStatus
from .limits import Slots

log = logging.getLogger("taskq.gateway")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_READ_CHUNK = 64 * 1024


def broker() -> Broker:
    return cast(Broker, current_app.extensions["taskq"])


def catalog() -> Catalog:
    return cast(Catalog, current_app.extensions["taskq.catalog"])


def slots() -> Slots:
    """Per-tenant caps on open streams and long polls (see limits.py)."""
    return cast(Slots, current_app.extensions["taskq.slots"])


def tenant() -> str:
    return cast(str, g.tenant)


def body() -> bytes:
    """The request's raw body, for `jsontext.parse` (400 unless a JSON object); 413 past
    the size limit, whatever the transfer encoding: a chunked body is read in pieces
    and refused as soon as it passes the limit, never buffered beyond it."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not end the stream: nothing safe to read
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while chunk := stream.read(min(_READ_CHUNK, limit + 1 - size)):
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


# -- arguments


def int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.ValidationFailed(f"{name}: must be an integer", {"field": name}) from None


def seconds_arg(name: str, default: float, maximum: float = 3600) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.ValidationFailed(f"{name}: must be a number of seconds", {"field": name}) from None
    if not 0 <= value <= maximum:
        raise errors.ValidationFailed(f"{name}: must be between 0 and {maximum:g} seconds", {"field": name})
    return value


def last_event_id() -> str | None:
    # EventSource resends the id it saw last as a header when it reconnects.
    return request.args.get("last_event_id") or request.headers.get("Last-Event-ID")


def flag(name: str) -> bool:
    return request.args.get(name, "").lower() in {"1", "true", "yes"}


def run_filter(args: Any) -> run_list.RunFilter:
    """The list filters from query arguments (shared with the dashboard)."""
    return run_list.RunFilter(
        status=RunStatus.from_arg(args.get("status")),
        processor=args.get("processor") or None,
        created_after_ms=run_list.parse_time("created_after", args.get("created_after")),
        created_before_ms=run_list.parse_time("created_before", args.get("created_before")),
        metadata=tuple((k.removeprefix("metadata."), v) for k, v in args.items() if k.startswith("metadata.")),
    )


# -- answers


def json_response(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """An answer serialised once, by the model itself."""
    return Response(text, status, headers, mimetype="application/json")


def sse_response(stream: Iterator[str]) -> Response:
    """The stream as an SSE response holding one of the tenant's slots until it closes."""
    return Response(slots().stream(tenant(), stream), mimetype="text/event-stream", headers=SSE_HEADERS)


# -- errors


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(errors.TaskqError, _taskq_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(Exception, _unexpected_error)


def error_response(
    status: int, message: str, detail: Any = None, retry_after_s: int | None = None, ref_id: str | None = None
) -> Response:
    """The error envelope; `ref_id` is the one a log line already names, else a new one."""
    if detail is not None and not isinstance(detail, dict):
        detail = {"detail": detail}
    body = ErrorResponse(error=ErrorObject(ref_id=ref_id or secrets.token_hex(8), message=message, detail=detail))
    response = jsonify(body.model_dump(exclude_none=True))
    response.status_code = status
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def _taskq_error(exc: errors.TaskqError) -> Response:
    if isinstance(exc, errors.RedisFull):
        # Past the high-water mark this is every create: the gauges tell the operator.
        level = logging.WARNING if exc.__cause__ is not None else logging.INFO
        log.log(level, "Redis full on %s %s: %s", request.method, request.path, exc.message)
    elif isinstance(exc, errors.BrokerUnavailable):
        log.warning("Redis unreachable on %s %s: %r", request.method, request.path, exc.__cause__)
    return error_response(exc.status_code, exc.message, exc.detail, exc.retry_after_s)


def _http_error(exc: HTTPException) -> Response:
    messages = {
        413: f"request body too large (limit {current_app.config['MAX_CONTENT_LENGTH']} bytes)",
        404: "no such endpoint",
        405: f"method {request.method} not allowed here",
    }
    return error_response(exc.code or 500, messages.get(exc.code or 500, exc.description or exc.name))


def _redis_error(exc: redis.RedisError) -> Response:
    """A Redis error that no `translated()` met on its way."""
    translation = as_taskq_error(exc)
    if translation is None:
        return _unexpected_error(exc)
    translation.__cause__ = exc
    return _taskq_error(translation)


def _unexpected_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    ref = secrets.token_hex(8)
    # One ref in the log line and in the answer, so a client's report finds the traceback.
    log.exception("unhandled error %s on %s %s", ref, request.method, request.path)
    return error_response(500, f"internal error (ref {ref})", ref_id=ref)
