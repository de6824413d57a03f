"""Schedules: processors that run by themselves (docs/scheduling.md).

    @task(name="nightly", schedule="0 3 * * *")                 # cron, five fields, UTC
    @task(name="report", schedule="0 9 * * 1", tz="Europe/Paris")
    @task(name="poll", schedule=2.5, schedule_input={"feed": "x"})   # every 2.5 s

A tick is a moment the schedule names: cron's, or for `every N s` the multiples of N
since the epoch (so every worker agrees on them). Every worker that serves the
processor watches its schedule, and at a tick the first to fire it makes the run:
the tick's state (`schedule:{processor}`: the next tick to fire and the last fired)
is moved on in the same atomic step as the run is made, and only if no other worker
moved it first (create.lua's guard), so exactly one run is made per tick. Ticks that
fell while no worker was up are caught up with *one* run, for the latest of them; its
metadata says how many it stands for. Times come from Redis's clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import ConfigurationError

MAX_MISSED_COUNTED = 10_000  # more missed ticks than this are counted as this many


@dataclass(frozen=True)
class Schedule:
    processor: str
    cron: str | None  # five fields
    every_ms: int | None
    tz: str
    input: Any = None

    @classmethod
    def parse(cls, processor: str, schedule: str | float, tz: str | None, input: Any = None) -> Schedule:
        """The schedule a processor declares; ConfigurationError naming it when it is not one."""
        zone = tz or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"{processor}: tz {zone!r} is not a time zone (e.g. 'UTC', 'Europe/Paris')"
            ) from None
        if isinstance(schedule, bool) or not isinstance(schedule, str | int | float):
            raise ConfigurationError(f"{processor}: schedule is a cron string or a number of seconds, not {schedule!r}")
        if isinstance(schedule, int | float):
            if not math.isfinite(schedule) or schedule < 0.1:
                raise ConfigurationError(f"{processor}: a schedule every {schedule!r} s: use at least 0.1 s")
            return cls(processor, None, int(round(schedule * 1000)), zone, input)
        if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
            raise ConfigurationError(
                f"{processor}: schedule {schedule!r} is not a five-field cron expression (minute hour day month weekday)"
            )
        return cls(processor, schedule, None, zone, input)

    def describe(self) -> str:
        """What it is, in words: also how a change of it is noticed (a fresh start)."""
        if self.every_ms is not None:
            return f"every {self.every_ms / 1000:g} s"
        return f"{self.cron} ({self.tz})"

    def next_after(self, ms: int) -> int:
        """The first tick strictly after `ms` (epoch ms)."""
        if self.every_ms is not None:
            return (ms // self.every_ms + 1) * self.every_ms
        start = datetime.fromtimestamp(ms / 1000, ZoneInfo(self.tz))
        nxt = croniter(self.cron, start).get_next(datetime)
        return int(nxt.timestamp() * 1000)

    def latest_at_or_before(self, ms: int) -> int:
        """The last tick at or before `ms`."""
        if self.every_ms is not None:
            return ms // self.every_ms * self.every_ms
        start = datetime.fromtimestamp((ms + 1) / 1000, ZoneInfo(self.tz))
        prev = croniter(self.cron, start).get_prev(datetime)
        return int(prev.timestamp() * 1000)

    def ticks_between(self, first: int, last: int) -> int:
        """How many ticks from `first` to `last`, both counted (both are ticks)."""
        if last < first:
            return 0
        if self.every_ms is not None:
            return min(MAX_MISSED_COUNTED, (last - first) // self.every_ms + 1)
        count, tick = 1, first
        while tick < last and count < MAX_MISSED_COUNTED:
            tick = self.next_after(tick)
            count += 1
        return count
