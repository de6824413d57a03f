"""The front page's chart of the last hour, drawn here as inline SVG (no script, no
build step): runs ended per minute, failed ones on top in red, and the queue wait's
p50 and p99 per minute on a log scale. Hovering a minute names its figures."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

from markupsafe import Markup, escape

from ...history import Minute
from .formats import duration

WIDTH, LEFT, RIGHT = 1000, 64, 12
PANEL_H, TOP, GAP = 100, 22, 42
OK, FAILED, P50, P99, GRID, INK = "#10b981", "#ef4444", "#2f5bea", "#f59e0b", "#e5e7eb", "#6b7280"
MIN_WAIT_S = 0.001  # the log scale's floor: waits rounded to 0 ms are drawn at 1 ms


def chart(minutes: list[Minute]) -> Markup:
    step = (WIDTH - LEFT - RIGHT) / max(1, len(minutes))
    wait_top = TOP + PANEL_H + GAP
    height = wait_top + PANEL_H + 24
    parts = [
        f'<svg class="chart" id="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        'aria-label="runs ended per minute and queue wait over the last hour" '
        'font-family="system-ui, sans-serif" font-size="11">',
        *_ended(minutes, step),
        *_waits(minutes, step, wait_top),
        *_time_axis(minutes, step, wait_top + PANEL_H + 16),
        *_hover(minutes, step, height),
        "</svg>",
    ]
    return Markup("".join(parts))


def _x(i: int, step: float) -> float:
    return LEFT + i * step


def _ended(minutes: list[Minute], step: float) -> list[str]:
    top = _nice(max((m.finished for m in minutes), default=0))
    parts = _legend(TOP - 8, "Runs ended per minute", [(OK, "completed or cancelled"), (FAILED, "failed")])
    for value in (0, top / 2, top):
        y = TOP + PANEL_H - value / top * PANEL_H
        parts.append(_gridline(y, f"{value:g}"))
    for i, m in enumerate(minutes):
        if not m.finished:
            continue
        x, bottom = _x(i, step) + 1, TOP + PANEL_H
        ok_h, failed_h = (m.finished - m.failed) / top * PANEL_H, m.failed / top * PANEL_H
        parts.append(_rect(x, bottom - ok_h, step - 2, ok_h, OK))
        parts.append(_rect(x, bottom - ok_h - failed_h, step - 2, failed_h, FAILED))
    return parts


def _waits(minutes: list[Minute], step: float, top: float) -> list[str]:
    parts = _legend(top - 8, "Queue wait (log scale)", [(P50, "p50"), (P99, "p99")])
    series = [(q, colour, [m.wait_s(q) for m in minutes]) for q, colour in ((0.5, P50), (0.99, P99))]
    seen = [v for _, _, values in series for v in values if v is not None]
    if not seen:
        parts.append(_gridline(top + PANEL_H, ""))
        parts.append(f'<text x="{LEFT + 8}" y="{top + PANEL_H / 2}" fill="{INK}">no run started in this hour</text>')
        return parts
    low = math.floor(math.log10(max(MIN_WAIT_S, min(seen))))
    high = max(low + 1, math.ceil(math.log10(max(MIN_WAIT_S, max(seen)))))

    def y(seconds: float) -> float:
        return top + PANEL_H - (math.log10(max(MIN_WAIT_S, seconds)) - low) / (high - low) * PANEL_H

    for decade in range(low, high + 1):
        parts.append(_gridline(y(10.0**decade), _decade(decade)))
    for _, colour, values in series:
        parts.extend(_line(values, step, y, colour))
    return parts


def _line(values: list[float | None], step: float, y: Callable[[float], float], colour: str) -> list[str]:
    """A polyline through the minutes that have a value, broken where one has none;
    a dot on each point, so that a lone minute shows."""
    parts: list[str] = []
    run: list[str] = []
    for i, value in enumerate([*values, None]):
        if value is not None:
            run.append(f"{_x(i, step) + step / 2:.1f},{y(value):.1f}")
            continue
        if len(run) > 1:
            parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.extend(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2" fill="{colour}"/>' for p in run)
        run = []
    return parts


def _time_axis(minutes: list[Minute], step: float, y: float) -> list[str]:
    parts = []
    for i, m in enumerate(minutes):
        at = datetime.fromtimestamp(m.start_ms / 1000, tz=UTC)
        if at.minute % 10 == 0:
            x = _x(i, step) + step / 2
            parts.append(f'<text x="{x:.1f}" y="{y}" text-anchor="middle" fill="{INK}">{at:%H:%M}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{y}" text-anchor="end" fill="{INK}">UTC</text>')
    return parts


def _hover(minutes: list[Minute], step: float, height: float) -> list[str]:
    parts = []
    for i, m in enumerate(minutes):
        at = datetime.fromtimestamp(m.start_ms / 1000, tz=UTC)
        p50, p99 = m.wait_s(0.5), m.wait_s(0.99)
        wait = f"queue wait p50 {duration(p50)}, p99 {duration(p99)}" if p50 is not None else "no run started"
        title = escape(f"{at:%H:%M} UTC: {m.finished} ended, {m.failed} failed; {wait}")
        parts.append(
            f'<rect class="minute" x="{_x(i, step):.1f}" y="0" width="{step:.1f}" height="{height}" '
            f'fill="transparent"><title>{title}</title></rect>'
        )
    return parts


def _legend(y: float, title: str, keys: list[tuple[str, str]]) -> list[str]:
    parts = [f'<text x="{LEFT}" y="{y}" font-weight="600" fill="#1d2330">{escape(title)}</text>']
    x = LEFT + 8 * len(title) + 16
    for colour, label in keys:
        parts.append(_rect(x, y - 9, 10, 10, colour))
        parts.append(f'<text x="{x + 14}" y="{y}" fill="{INK}">{escape(label)}</text>')
        x += 14 + 7 * len(label) + 16
    return parts


def _decade(power: int) -> str:
    """10^power seconds, as `1 ms`, `100 ms`, `10 s`, `1000 s`."""
    seconds = 10.0**power
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def _gridline(y: float, label: str) -> str:
    return (
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
        f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{INK}">{escape(label)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, colour: str) -> str:
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(0.0, w):.1f}" height="{h:.1f}" fill="{colour}"/>'


def _nice(most: int) -> float:
    """The axis top: the smallest of 1, 2, 5 × 10^k not below `most` (at least 2)."""
    top = 2.0
    while top < most:
        digits = 10 ** math.floor(math.log10(top))
        top = next(f * digits for f in (1, 2, 5, 10) if f * digits > top)
    return top
