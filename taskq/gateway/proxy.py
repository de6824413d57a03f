"""/v1/async/{upstream}/{path}: make any slow HTTP endpoint asynchronous.

The request is recorded as a run of the built-in `http` processor against one of the
operator's TASKQ_PROXY_UPSTREAMS (never an arbitrary URL) and answered at once with
202 `{run_id}`; the upstream's answer becomes the run's output. `webhookEndpoint`
(query parameter or `X-Webhook-Endpoint` header) receives the upstream's response
body once the run completes (or the TaskRun, if it failed), signed like every webhook.

Of the caller's request, the upstream gets the method, the path, the body, the query
less taskq's own parameters (`webhookEndpoint`, `async`: matched by their decoded
names, the rest re-encoded) and the headers on the allow-list of upstream.py.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, request

from .. import errors, paths, run
from ..jsontext import parse
from ..models import RunInput
from ..upstream import forwarded_headers
from .http import body as read_body
from .http import broker, catalog, tenant
from .traces import traced

bp = Blueprint("proxy", __name__, url_prefix=paths.ASYNC)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Query parameters that are taskq's, never the upstream's.
OWN_PARAMETERS = frozenset({"webhookEndpoint", "async"})


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.route("/<upstream>/", defaults={"path": ""}, methods=METHODS)
@bp.route("/<upstream>/<path:path>", methods=METHODS)
@traced
def call(upstream: str, path: str) -> tuple[dict[str, Any], int]:
    settings = broker().settings
    if upstream not in settings.upstreams:
        raise errors.NotFound(f"no upstream named {upstream!r} is configured")
    try:
        body = read_body().decode()
    except UnicodeDecodeError:
        raise errors.ValidationFailed("body: only UTF-8 text bodies can be proxied", {"field": "body"}) from None
    query = _forwarded_query()
    req: dict[str, Any] = {
        "processor": "http",
        "input": {
            "upstream": upstream,
            "method": request.method,
            "path": path,
            "query": query,
            "headers": forwarded_headers(request.headers.items(), settings.proxy_forward_headers),
            "body": body,
        },
    }
    hook = request.args.get("webhookEndpoint") or request.headers.get("X-Webhook-Endpoint")  # decoded names too
    if hook:
        req["webhook"] = {"url": hook}
    key = request.headers.get("Idempotency-Key")
    new = run.prepare(
        broker(), catalog(), tenant(), parse(RunInput, req), partition=run.partition_of_key(broker(), key)
    )
    if hook:
        # Server-side only: the webhook carries the upstream's answer, not the TaskRun.
        new.fields["webhook_body"] = "upstream_response"
    digest = json.dumps([request.method, path, query, body, hook or ""]).encode()
    ids, _ = run.create(broker(), [new], tenant=tenant(), idempotency_key=key, request=digest)
    return {"run_id": ids[0], "status": "queued"}, 202


def _forwarded_query() -> str:
    """The query less taskq's own parameters, matched by their decoded names and
    re-encoded. Decoded as Latin-1, so that every byte of every other parameter
    (UTF-8 or not) reaches the upstream as it was sent."""
    pairs = parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return urlencode([(name, value) for name, value in pairs if name not in OWN_PARAMETERS], encoding="latin-1")
