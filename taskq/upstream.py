"""Where the `http` processor may send a request: the operator's configured
upstreams (TASKQ_PROXY_UPSTREAMS), only paths under each one's base path, and only
the request headers on the forwarding allow-list."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from . import errors

# The caller's request headers that are stored and forwarded: what the body's format
# and the answer's form depend on, nothing that says who the caller is or where they
# came from (an allow-list: the names proxies and CDNs invent for identity are many,
# and new ones keep coming). The operator adds names with TASKQ_PROXY_FORWARD_HEADERS.
FORWARDED_HEADERS = frozenset({"content-type", "accept", "accept-language"})
# Never forwarded, whatever the operator adds: taskq's own credentials and controls,
# and what the HTTP client sets itself (hop-by-hop headers, framing, the host).
NEVER_FORWARDED = frozenset(
    {
        "x-api-key",
        "authorization",
        "proxy-authorization",
        "x-webhook-endpoint",
        "idempotency-key",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "host",
        "content-length",
    }
)


def forwarded_headers(headers: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> dict[str, str]:
    """The headers of `headers` that go to the upstream: FORWARDED_HEADERS and the
    operator's `extra` names (case-insensitive), never NEVER_FORWARDED."""
    allowed = (FORWARDED_HEADERS | {name.strip().lower() for name in extra}) - NEVER_FORWARDED
    return {name: value for name, value in headers if name.strip().lower() in allowed}


# A client could percent-encode the encoding itself (%252e%252e); decoding stops
# once nothing changes, or fails the path after this many rounds.
_MAX_DECODE_ROUNDS = 4


def url(base: str, path: str, query: str = "", field: str = "path") -> str:
    """The URL for `path` under `base`: percent-decoded (repeatedly), dot segments
    resolved; raises ValidationFailed for a path that would leave the base's path or
    carries a NUL, a backslash or a scheme/host of its own."""
    decoded = path
    for _ in range(_MAX_DECODE_ROUNDS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        raise errors.ValidationFailed(f"{field}: too many layers of percent-encoding", {"field": field})
    if any(c in decoded for c in "\\\x00?#") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise errors.ValidationFailed(
            f"{field}: control characters, '\\', '?' and '#' are not allowed", {"field": field}
        )
    segments = [s for s in decoded.split("/") if s not in ("", ".")]
    depth = 0
    for segment in segments:
        depth += -1 if segment == ".." else 1
        if depth < 0:
            raise errors.ValidationFailed(f"{field}: leaves the upstream's base path", {"field": field})
    resolved = posixpath.normpath("/" + "/".join(segments)).lstrip("/") if segments else ""
    base_path = urlsplit(base).path.rstrip("/")
    target = f"{base.rstrip('/')}/{quote(resolved, safe='/:@!$&()*+,;=~-._')}"
    if not urlsplit(target).path.startswith(base_path + "/"):
        raise errors.ValidationFailed(f"{field}: leaves the upstream's base path", {"field": field})
    return target + (f"?{query}" if query else "")


def check_name(name: object, upstreams: dict[str, str], field: str = "input.upstream") -> str:
    """The base URL of the upstream called `name`; ValidationFailed if there is none."""
    if not isinstance(name, str) or name not in upstreams:
        known = sorted(upstreams)
        raise errors.ValidationFailed(
            f"{field}: no upstream named {name!r} is configured; configured: {', '.join(known) or 'none'}",
            {"field": field, "known": known},
        )
    return upstreams[name]
