"""What an output file may be called and typed."""

from __future__ import annotations

import re

from ..errors import OutputRejected
from ..headers import MAX_MEDIA_TYPE_CHARS, is_media_type

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise OutputRejected(
            f"output name {name!r}: use 1-200 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )
    return name


def check_content_type(name: str, content_type: str) -> str:
    if not is_media_type(content_type):
        shown = content_type if len(content_type) <= 80 else content_type[:80] + "…"
        raise OutputRejected(
            f"output {name!r}: content type {shown!r} is not a media type: use type/subtype[; name=value]..., "
            f"printable ASCII, at most {MAX_MEDIA_TYPE_CHARS} characters"
        )
    return content_type
