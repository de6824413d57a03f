"""/v1/async/{upstream}/{path}: make any slow HTTP endpoint asynchronous.

The request is recorded as a run of the built-in `http` processor against one of the
operator's TASKQ_PROXY_UPSTREAMS (never an arbitrary URL) and answered at once with
202 `{run_id}`; the upstream's answer becomes the run's output. `webhookEndpoint`
(query parameter or `X-Webhook-Endpoint` header) receives the upstream's response
body once the run completes (or the TaskRun, if it failed), signed like every webhook.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from .. import errors, run
from ..models import RunInput, parse
from . import broker, catalog, tenant

bp = Blueprint("proxy", __name__, url_prefix="/v1/async")

# Never forwarded: taskq's own credentials and what the HTTP client sets itself.
DROPPED_HEADERS = {"x-api-key", "authorization", "host", "content-length", "connection", "x-webhook-endpoint",
                   "idempotency-key", "transfer-encoding", "keep-alive", "upgrade", "te"}  # fmt: skip
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.route("/<upstream>/", defaults={"path": ""}, methods=METHODS)
@bp.route("/<upstream>/<path:path>", methods=METHODS)
def call(upstream: str, path: str) -> tuple[dict[str, Any], int]:
    if upstream not in broker().settings.upstreams:
        raise errors.NotFound(f"no upstream named {upstream!r} is configured")
    if ".." in path.split("/"):
        raise errors.ValidationFailed("path: '..' segments are not allowed", {"field": "path"})
    try:
        body = request.get_data(cache=False).decode()
    except UnicodeDecodeError:
        raise errors.ValidationFailed("body: only UTF-8 text bodies can be proxied", {"field": "body"}) from None
    query = "&".join(part for part in request.query_string.decode().split("&") if not part.startswith(("webhookEndpoint=", "async=")))
    req: dict[str, Any] = {
        "processor": "http",
        "input": {
            "upstream": upstream,
            "method": request.method,
            "path": path,
            "query": query,
            "headers": {k: v for k, v in request.headers.items() if k.lower() not in DROPPED_HEADERS},
            "body": body,
        },
    }
    hook = request.args.get("webhookEndpoint") or request.headers.get("X-Webhook-Endpoint")
    if hook:
        req["webhook"] = {"url": hook, "body": "upstream_response"}
    new = run.prepare(broker(), catalog(), tenant(), parse(RunInput, req))
    ids, _ = run.create(broker(), [new], tenant=tenant(), idempotency_key=request.headers.get("Idempotency-Key"))
    return {"run_id": ids[0], "status": "queued"}, 202
