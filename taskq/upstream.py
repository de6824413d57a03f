"""Where the `http` processor may send a request: the operator's configured
upstreams (TASKQ_PROXY_UPSTREAMS), and only paths under each one's base path."""

from __future__ import annotations

import posixpath
from urllib.parse import quote, unquote, urlsplit

from . import errors

# Never stored nor forwarded: what the HTTP client sets itself (hop-by-hop), the
# caller's credentials for taskq, and the caller's identity.
DROPPED_HEADERS = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length",
    "proxy-authorization", "proxy-connection", "cookie", "x-forwarded-for", "x-forwarded-host",
    "x-forwarded-proto", "forwarded", "x-real-ip", "x-api-key", "authorization", "x-webhook-endpoint",
    "idempotency-key",
})  # fmt: skip

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
        raise errors.ValidationFailed(f"{field}: control characters, '\\', '?' and '#' are not allowed", {"field": field})
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
