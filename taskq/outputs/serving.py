"""How an output file is served: the one decision, from its name and stored content
type, that every path serving a file follows (the gateway's directory downloads,
S3's presigned URLs).

An output's content and type are chosen by the processor, that is by whoever
submitted the run, yet its URL may share an origin with the dashboard. So a file is
never served as something a browser would run: only types on a short list of inert
ones (shown, never executed) are `inline`; every other type, HTML, SVG, XML, PDF
and anything unknown among them, is an `attachment` (downloaded, not rendered). The
gateway adds `X-Content-Type-Options: nosniff` and a CSP that sandboxes the
response (as raw.githubusercontent.com does), so even a file a browser did render
would have no script and no origin. A stored type that is not a valid media type
(a record from before types were checked) is served as application/octet-stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..headers import is_media_type
from .names import NAME

# Types a browser shows without running anything in them.
INERT = frozenset(
    {
        "text/plain",
        "text/csv",
        "application/json",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "video/mp4",
        "video/webm",
        "video/ogg",
    }
)
OCTET_STREAM = "application/octet-stream"
# Sent with every output file the gateway serves, whatever its type.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}


@dataclass(frozen=True)
class Serving:
    """What a response carrying an output file says about it."""

    content_type: str
    disposition: str  # `inline; filename="…"` or `attachment; filename="…"`

    @property
    def inline(self) -> bool:
        return self.disposition.startswith("inline")

    def headers(self) -> dict[str, str]:
        """The headers besides Content-Type (which the response sets from
        `content_type`, adding a charset to a text type that has none)."""
        return {"Content-Disposition": self.disposition, **SECURITY_HEADERS}


def serving(name: str, content_type: str) -> Serving:
    """How the file `name`, saved as `content_type`, is served."""
    if not is_media_type(content_type):
        content_type = OCTET_STREAM
    essence = content_type.split(";", 1)[0].strip().lower()
    # Names are checked when saved ([A-Za-z0-9._-]): nothing in them needs quoting.
    filename = name if NAME.fullmatch(name) else "download"
    how = "inline" if essence in INERT else "attachment"
    return Serving(content_type, f'{how}; filename="{filename}"')
