"""Webhook URLs: which ones taskq may call (SSRF rules).

A URL must be http or https, and its host must resolve only to public addresses:
never loopback, private, link-local (cloud metadata lives there), multicast,
reserved or unspecified — unless TASKQ_WEBHOOK_ALLOW_PRIVATE=1. The check runs when
a run is created and again, on the address actually connected to, at send time.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from . import errors
from .settings import Settings


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, settings: Settings, *, field: str = "webhook.url") -> None:
    """Raises ValidationFailed (422) for a URL taskq will not call."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.ValidationFailed(f"{field}: must be an http or https URL with a host", {"field": field})
    if settings.webhook_allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise errors.ValidationFailed(f"{field}: host {parts.hostname!r} does not resolve", {"field": field}) from exc
    blocked = sorted({str(info[4][0]) for info in infos if not is_public(str(info[4][0]))})
    if blocked:
        raise errors.ValidationFailed(
            f"{field}: host {parts.hostname!r} resolves to a non-public address ({', '.join(blocked)})",
            {"field": field, "addresses": blocked},
        )
