"""/v1/async/{upstream}/{path}: make any slow HTTP endpoint asynchronous.

The request is recorded as a run of the built-in `http` processor against one of the
operator's TASKQ_PROXY_UPSTREAMS (never an arbitrary URL) and answered at once with
202 `{run_id}`; the upstream's answer becomes the run's output. `webhookEndpoint`
(query parameter or `X-Webhook-Endpoint` header) receives the upstream's response
body once the run completes (or the TaskRun, if it failed), signed like every webhook.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, request

from .. import errors, run
from ..upstream import DROPPED_HEADERS
from ..models import RunInput, parse
from . import body as read_body
from . import broker, catalog, tenant

bp = Blueprint("proxy", __name__, url_prefix="/v1/async")

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.route("/<upstream>/", defaults={"path": ""}, methods=METHODS)
@bp.route("/<upstream>/<path:path>", methods=METHODS)
def call(upstream: str, path: str) -> tuple[dict[str, Any], int]:
    if upstream not in broker().settings.upstreams:
        raise errors.NotFound(f"no upstream named {upstream!r} is configured")
    try:
        body = read_body().decode()
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
            "headers": {k: v for k, v in request.headers.items() if k.strip().lower() not in DROPPED_HEADERS},
            "body": body,
        },
    }
    hook = request.args.get("webhookEndpoint") or request.headers.get("X-Webhook-Endpoint")
    if hook:
        req["webhook"] = {"url": hook}
    new = run.prepare(broker(), catalog(), tenant(), parse(RunInput, req))
    if hook:
        # Server-side only: the webhook carries the upstream's answer, not the TaskRun.
        new.fields["webhook_body"] = "upstream_response"
    digest = json.dumps([request.method, path, query, body, hook or ""]).encode()
    key = request.headers.get("Idempotency-Key")
    ids, _ = run.create(broker(), [new], tenant=tenant(), idempotency_key=key, request=digest)
    return {"run_id": ids[0], "status": "queued"}, 202
