"""The built-in `http` processor: calls a configured upstream and records its answer.

It never calls an arbitrary URL: `upstream` names an entry of TASKQ_PROXY_UPSTREAMS,
and `path` is appended to that entry's base URL.
"""

from __future__ import annotations

from typing import Any

import requests
from pydantic import BaseModel, Field

from ..processor import task
from ..settings import Settings

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}


class HttpRequest(BaseModel):
    upstream: str
    method: str = "POST"
    path: str = ""
    query: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""


class UpstreamError(Exception):
    """The upstream answered 5xx or could not be reached; worth a retry."""


@task(name="http", queue="default", timeout=12 * 3600, retry_on=(UpstreamError, requests.ConnectionError, requests.Timeout))
def call_upstream(req: HttpRequest) -> dict[str, Any]:
    base = Settings.from_env().upstreams.get(req.upstream)
    if base is None:
        raise LookupError(f"no upstream named {req.upstream!r} is configured on this worker")
    url = f"{base}/{req.path.lstrip('/')}" + (f"?{req.query}" if req.query else "")
    headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP}
    response = requests.request(req.method, url, headers=headers, data=req.body.encode(), timeout=(10, None), allow_redirects=False)
    if response.status_code >= 500:
        raise UpstreamError(f"upstream {req.upstream} answered {response.status_code}")
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return {"status_code": response.status_code, "headers": dict(response.headers), "body": body}
