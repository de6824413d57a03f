"""Time as taskq writes it: epoch milliseconds in Redis, RFC 3339 on the wire.

What another process reads (leases, due times, deadlines, created_ms) is stamped by
the scripts with Redis's own clock (`now_ms()` in scripts/_lib.lua); this process's
clock only names ids and measures its own waits.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """This process's wall clock, in epoch ms."""
    return int(time.time() * 1000)


def iso(ms: str | int | None) -> str | None:
    """Epoch ms as RFC 3339 UTC with milliseconds (`2026-12-01T14:11:50.123Z`); None
    for no time."""
    if ms in (None, "", 0):
        return None
    dt = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(value: str) -> int | None:
    """An RFC 3339 time with a zone as epoch ms; None when it is not one."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp() * 1000)
