"""The Flask gateway: validates requests, writes runs, answers reads, streams SSE.

Stateless: everything it knows is in Redis, so run as many as you like.

    gunicorn 'taskq.gateway:create_app()'
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, g, request

from .. import errors, paths, tracing
from ..broker import Broker
from ..catalog import Catalog
from ..ids import tenant_of
from ..settings import Settings
from . import dashboard, deliveries, groups, health, outputs, proxy, runs, traces
from .http import register_error_handlers
from .limits import Slots

log = logging.getLogger("taskq.gateway")

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
PUBLIC_PREFIXES = ("/docs/", paths.OUTPUT_FILES)  # output files: their signed URL is the credential


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("taskq")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    broker = Broker(settings)
    app.extensions["taskq"] = broker
    try:
        log.info("Redis holds %d partition(s)", broker.partitions)  # fixed there now, if it was not
    except errors.BrokerUnavailable:
        log.warning("Redis is unreachable at start; requests answer 503 until it is back")
    app.extensions["taskq.catalog"] = Catalog(broker)
    app.extensions["taskq.tenants"] = {tenant_of(key): key for key in settings.api_keys}
    if not settings.api_keys:
        log.warning(
            "no API keys: every API request answers 401 and nobody can sign in to the dashboard; "
            "set TASKQ_API_KEYS (comma-separated, one tenant per key)"
        )
    app.extensions["taskq.slots"] = Slots(settings.max_streams_per_tenant, settings.max_streams_per_process)

    for module in (runs, groups, deliveries, proxy, health, outputs, dashboard):
        for bp in module.blueprints():
            app.register_blueprint(bp)

    app.before_request(_authenticate)
    if tracing.enabled():
        traces.install(app)
    register_error_handlers(app)
    return app


def _authenticate() -> None:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return
    if request.path == dashboard.PREFIX or request.path.startswith(dashboard.PREFIX + "/"):
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
