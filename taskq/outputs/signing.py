"""Signed, expiring URLs for files the gateway serves: an HMAC-SHA256 over the path
and the expiry time, with a key only taskq's processes know."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from .. import errors


def signature(secret: str, path: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def sign(secret: str, path: str, expires_s: int) -> str:
    """`path` with the query that lets anyone GET it until `expires_s` from now."""
    expires = int(time.time()) + expires_s
    return f"{path}?expires={expires}&sig={signature(secret, path, expires)}"


def verify(secret: str, path: str, expires: str | None, sig: str | None) -> None:
    """Forbidden (403) unless the signature holds for this path and expiry; Gone (410)
    once the expiry has passed."""
    if not expires or not sig or not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
        raise errors.Forbidden("this output URL is not signed")
    if not hmac.compare_digest(signature(secret, path, int(expires)).encode(), sig.encode("utf-8", "surrogateescape")):
        raise errors.Forbidden("this output URL's signature does not match")
    if int(expires) < time.time():
        raise errors.Gone("this output URL has expired; read the run again for a fresh one")
