"""The last hour, minute by minute: how many runs ended (and how many of them failed)
and how long runs waited in their queue, for the dashboard's chart.

Nothing is counted per run for it: it samples the lifetime counters of metrics.py.
Once a minute per partition, the first maintenance step of the minute (tend.lua)
snapshots their totals (`metrics_totals` in scripts/_lib.lua: `ended|<status>` and
`wait|<ms>`, the wait rounded up to two significant digits, so the quantiles read here
are within 1% of the true ones) into `metrics:snapshot:{minute}` (minute of Redis's
clock), kept keys.SNAPSHOT_KEPT_S. A minute's counts are the next minute's snapshot
less its own; the current minute's, the live totals less its snapshot. Until the
current minute's snapshot is taken (its first seconds), the live totals stand in for
it: the current minute shows nothing yet, the minute before what changed since its own.

So a run is counted in the minute of the snapshot before it, which is taken within a
maintenance interval (`reaper_interval_s`) of the minute's start: a run that ended in
a minute's first seconds may show in the minute before. Where minutes have no snapshot
(no worker was alive to take one), the change between the nearest snapshots on either
side is put on the later minute, the last before the later snapshot; the earlier
minutes of the gap show nothing, as do the minutes of the hour before its first
snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from . import keys
from .broker import Broker, translated

MINUTE_MS = 60_000
HOUR_MINUTES = 60

Totals = dict[str, int]  # `ended|<status>` or `wait|<ms>` -> runs


@dataclass
class Minute:
    start_ms: int  # when the minute began (Redis's clock)
    ended: dict[str, int] = field(default_factory=dict)  # terminal status -> runs that reached it
    waits: dict[int, int] = field(default_factory=dict)  # queue wait in ms (rounded up) -> runs

    @property
    def finished(self) -> int:
        return sum(self.ended.values())

    @property
    def failed(self) -> int:
        return self.ended.get("failed", 0)

    def wait_s(self, quantile: float) -> float | None:
        """The queue wait that `quantile` of the runs started this minute stayed
        within (seconds); None when none started."""
        total = sum(self.waits.values())
        if not total:
            return None
        seen = 0
        for ms, n in sorted(self.waits.items()):
            seen += n
            if seen >= quantile * total:
                return ms / 1000
        return max(self.waits) / 1000  # (float rounding of quantile * total)


def last_hour(broker: Broker, minutes: int = HOUR_MINUTES) -> list[Minute]:
    """The last `minutes` minutes, oldest first, the current (partial) one last;
    every partition summed: its snapshots in one pipelined round trip, then its live
    totals (a script call per partition: a cluster pipelines no scripts)."""
    with translated():
        now_minute = broker.now_ms() // MINUTE_MS
        span = range(now_minute - minutes + 1, now_minute + 1)
        pipe = broker.redis.pipeline(transaction=False)
        for partition in range(broker.partitions):
            for minute in span:
                pipe.hgetall(keys.metrics_snapshot(partition, minute))
        stored = iter(pipe.execute())
        # read after the snapshots, so at least as new as any of them
        lives = [broker.scripts.metrics_totals(partition) for partition in range(broker.partitions)]
    counts: dict[int, Totals] = defaultdict(lambda: defaultdict(int))
    for flat in lives:
        snapshots = {minute: _snapshot(next(stored)) for minute in span}
        live = {name: int(n) for name, n in zip(flat[::2], flat[1::2], strict=True)}
        for minute, delta in _deltas(snapshots, live, now_minute):
            for name, n in delta.items():
                counts[minute][name] += n
    return [_minute(minute, counts[minute]) for minute in span]


def _snapshot(stored: dict[str, str]) -> Totals | None:
    """A snapshot's totals; None where none was taken (a taken one always has `at`)."""
    if not stored:
        return None
    return {name: int(n) for name, n in stored.items() if name != "at"}


def _deltas(snapshots: dict[int, Totals | None], live: Totals, now_minute: int) -> Iterator[tuple[int, Totals]]:
    """Each snapshot's change since the snapshot before it, on the minute before it;
    the live totals' change since the last snapshot, on the current minute, or, while
    the current minute has no snapshot yet, on the minute before (the live totals
    stand in for the snapshot to come). A total that went down (the counters were
    deleted) counts nothing."""
    points = [(minute, totals) for minute, totals in sorted(snapshots.items()) if totals is not None]
    points.append((now_minute + 1 if snapshots.get(now_minute) is not None else now_minute, live))
    for (_, before), (minute, after) in pairwise(points):
        yield minute - 1, {name: max(0, n - before.get(name, 0)) for name, n in after.items()}


def _minute(minute: int, totals: Totals) -> Minute:
    ended: dict[str, int] = {}
    waits: dict[int, int] = {}
    for name, n in totals.items():
        kind, _, what = name.partition("|")
        if n and kind == "ended":
            ended[what] = n
        elif n and kind == "wait":
            waits[int(what)] = n
    return Minute(minute * MINUTE_MS, ended, waits)
