"""HTTP header rules (RFC 9110) for headers a client asks taskq to send."""

from __future__ import annotations

import re

# RFC 9110 §5.1 / §5.5: a field name is a token; a value is visible characters,
# spaces and tabs (obs-text allowed), never CR, LF, NUL or another control.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
MAX_HEADER_VALUE_CHARS = 4096

# The headers of a webhook delivery that make it a signed, well-formed request: a
# webhook's own `headers` may add to them, never replace them.
SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
RESERVED_HEADERS = SIGNATURE_HEADERS | {
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "user-agent",
}


# RFC 9110 §8.3.1 / §5.6.6: type "/" subtype *( OWS ";" OWS [ parameter ] ), each
# parameter a token "=" (token / quoted-string). Printable ASCII and spaces only: the
# grammar also allows tabs and obs-text, which no media type needs.
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN.pattern}/{_TOKEN.pattern}(?: *; *(?:{_TOKEN.pattern}=(?:{_TOKEN.pattern}|{_QUOTED}))?)*"
)
MAX_MEDIA_TYPE_CHARS = 255


def is_valid(name: str, value: str) -> bool:
    return bool(_TOKEN.fullmatch(name)) and len(value) <= MAX_HEADER_VALUE_CHARS and bool(_FIELD_VALUE.fullmatch(value))


def is_media_type(value: str) -> bool:
    """Whether `value` is a media type (`text/csv; charset=utf-8`) that is safe to
    send as a Content-Type: the RFC 9110 grammar, at most 255 characters."""
    return len(value) <= MAX_MEDIA_TYPE_CHARS and bool(_MEDIA_TYPE.fullmatch(value))


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """A webhook's own headers, if every name is an RFC 9110 token, no value carries a
    control character, and none is reserved (compared trimmed and lower-cased);
    raises ValueError naming the first that is not."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not an RFC 9110 token")
        if len(value) > MAX_HEADER_VALUE_CHARS or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(f"header {name!r}: value has a control character (CR, LF, NUL…), or is too long")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by taskq and cannot be given")
    return headers
