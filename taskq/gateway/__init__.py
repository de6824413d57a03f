"""The Flask gateway: validates requests, writes runs, answers reads, streams SSE.

Stateless: everything it knows is in Redis, so run as many as you like.

    gunicorn 'taskq.gateway:create_app()'
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any, cast

import redis
from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import errors
from ..broker import Broker
from ..catalog import Catalog
from ..models import ErrorObject, ErrorResponse
from ..run import tenant_of
from ..settings import Settings
from .limits import Slots

log = logging.getLogger("taskq.gateway")

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
PUBLIC_PREFIXES = ("/docs/", "/v1/outputs/")  # output files: their signed URL is the credential
DASHBOARD = "/dashboard"


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("taskq")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    broker = Broker(settings)
    app.extensions["taskq"] = broker
    app.extensions["taskq.catalog"] = Catalog(broker)
    app.extensions["taskq.tenants"] = {tenant_of(key): key for key in settings.api_keys}
    if not settings.api_keys:
        log.warning("no API keys: every API request answers 401 and nobody can sign in to the dashboard; "
                    "set TASKQ_API_KEYS (comma-separated, one tenant per key)")
    app.extensions["taskq.slots"] = Slots(settings.max_streams_per_tenant, settings.max_streams_per_process)

    from . import dashboard, deliveries, groups, health, outputs, proxy, runs

    for module in (runs, groups, deliveries, proxy, health, outputs, dashboard):
        for bp in module.blueprints():
            app.register_blueprint(bp)

    app.before_request(_authenticate)
    app.register_error_handler(errors.TaskqError, _taskq_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


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
    """The request's raw body, for `models.parse` (400 unless a JSON object); 413 past
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


_READ_CHUNK = 64 * 1024


def _authenticate() -> None:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return
    if request.path == DASHBOARD or request.path.startswith(DASHBOARD + "/"):
        return  # the dashboard signs in with a session cookie instead (dashboard/__init__.py)
    key = request.headers.get("x-api-key")
    auth = request.headers.get("Authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    if not key:
        raise errors.Unauthorized("missing API key: send x-api-key or Authorization: Bearer")
    candidate = tenant_of(key)
    known = current_app.extensions["taskq.tenants"].get(candidate)
    if known is None or not hmac.compare_digest(known, key):
        raise errors.Unauthorized("unknown API key")
    g.tenant = candidate


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
    if isinstance(exc, errors.BrokerUnavailable):
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
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        log.warning("Redis unreachable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "Redis is unreachable; try again shortly", retry_after_s=1)
    return _unexpected_error(exc)


def _unexpected_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    ref = secrets.token_hex(8)
    # One ref in the log line and in the answer, so a client's report finds the traceback.
    log.exception("unhandled error %s on %s %s", ref, request.method, request.path)
    return error_response(500, f"internal error (ref {ref})", ref_id=ref)
