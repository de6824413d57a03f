"""How the dashboard writes times and durations: short enough for a table cell on one
line, with the full RFC 3339 time a hover away."""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup

from ...clock import iso, now_ms, parse_rfc3339


def duration(seconds: float | None) -> str:
    """`850 ms`, `12.4 s`, `3 min 5 s`, `2 h 10 min`; `–` for no duration."""
    if seconds is None or seconds < 0:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def between(start: str | None, end: str | None) -> float | None:
    """Seconds from one RFC 3339 time to another; None unless both are there."""
    a, b = parse_rfc3339(start or ""), parse_rfc3339(end or "")
    return None if a is None or b is None else (b - a) / 1000


def compact(when: str | int | None, today_ms: int | None = None) -> str:
    """The time of day for today (UTC), `Nov 24 14:01` this year, else the date."""
    ms = parse_rfc3339(when) if isinstance(when, str) else when
    if not ms:
        return "–"
    at = datetime.fromtimestamp(ms / 1000, tz=UTC)
    today = datetime.fromtimestamp((today_ms or now_ms()) / 1000, tz=UTC)
    if at.date() == today.date():
        return at.strftime("%H:%M:%S")
    if at.year == today.year:
        return at.strftime("%b %d %H:%M")
    return at.strftime("%Y-%m-%d")


def time_tag(when: str | int | None) -> Markup:
    """A <time> that shows `compact(when)` and says the full time on hover."""
    full = when if isinstance(when, str) else iso(when)
    if not full:
        return Markup("–")
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(full, compact(when))
