"""The built-in `http` processor: calls a configured upstream and records its answer.

It never calls an arbitrary URL: `upstream` names an entry of TASKQ_PROXY_UPSTREAMS,
and `path` is appended to that entry's base URL.
"""

from __future__ import annotations

from typing import Any

import requests
from pydantic import BaseModel, Field

from .. import tracing, upstream
from ..errors import UpstreamError
from ..processor import task
from ..settings import Settings


class HttpRequest(BaseModel):
    upstream: str
    method: str = "POST"
    path: str = ""
    query: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""


@task(
    name="http",
    queue="default",
    timeout=12 * 3600,
    retry_on=(UpstreamError, requests.ConnectionError, requests.Timeout),
)
def call_upstream(req: HttpRequest) -> dict[str, Any]:
    settings = Settings.from_env()
    base = upstream.check_name(req.upstream, settings.upstreams)
    url = upstream.url(base, req.path, req.query)  # every path passes here: one check
    # The upstream's request continues the run's trace (tracing.py), when traces are on.
    headers = tracing.propagate(upstream.forwarded_headers(req.headers.items(), settings.proxy_forward_headers))
    response = requests.request(
        req.method, url, headers=headers, data=req.body.encode(), timeout=(10, None), allow_redirects=False
    )
    if response.status_code >= 500:
        raise UpstreamError(f"upstream {req.upstream} answered {response.status_code}")
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return {"status_code": response.status_code, "headers": dict(response.headers), "body": body}
