"""Which URLs a webhook may call (SSRF rules).

A URL must be http or https, and its host must resolve only to public addresses:
never loopback, private, link-local (cloud metadata lives there), multicast,
reserved or unspecified; for IPv6, global unicast only (see `is_public`) — unless
TASKQ_WEBHOOK_ALLOW_PRIVATE=1. The check runs when a run is created and again, on
the address actually connected to, at send time (transport.py).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .. import errors
from ..settings import Settings

# IPv6: only global unicast (2000::/3, and global by the IANA registry) is public;
# everything else (loopback, unspecified, IPv4-compatible, SIIT `::ffff:0:0:0/96`,
# ULA, link-local, site-local, multicast, local-use NAT64 `64:ff9b:1::/48`, ...) is
# not. Two kinds of address are judged by the IPv4 address they carry, because that
# is where a packet to them goes: IPv4-mapped (`::ffff:a.b.c.d`, the socket API's
# spelling of IPv4) and the well-known NAT64 prefix (an IPv6-only network reaches
# every IPv4 host through it). The transition prefixes inside 2000::/3 that embed an
# IPv4 address are refused outright: 6to4 (deprecated, RFC 7526) and Teredo (a
# client-side tunnel whose NAT address is obfuscated): no receiver worth calling
# lives there, and what they reach cannot be checked from here.
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NOT_GLOBAL_UNICAST = tuple(
    ipaddress.ip_network(n)
    for n in (
        "2002::/16",  # 6to4
        "2001::/32",  # Teredo
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637; newer than some Pythons' registry)
    )
)


def is_public(address: str) -> bool:
    """Whether taskq may call `address` (an IPv4 or IPv6 literal, zone allowed)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        else:
            return ip in _GLOBAL_UNICAST and ip.is_global and not any(ip in net for net in _NOT_GLOBAL_UNICAST)
    return ip.is_global and not ip.is_multicast


def check_url(url: str, settings: Settings, *, field: str = "webhook.url") -> None:
    """Raises ValidationFailed (422) for a URL taskq will not call."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError:
        raise errors.ValidationFailed(f"{field}: not a valid URL (host or port)", {"field": field}) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(ord(c) <= 0x20 for c in url):
        raise errors.ValidationFailed(f"{field}: must be an http or https URL with a host", {"field": field})
    if settings.webhook_allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise errors.ValidationFailed(f"{field}: host {parts.hostname!r} does not resolve", {"field": field}) from exc
    if any(not is_public(str(info[4][0])) for info in infos):
        # The address itself is not echoed: it would map the operator's network.
        raise errors.ValidationFailed(
            f"{field}: host {parts.hostname!r} resolves to a non-public address", {"field": field}
        )
