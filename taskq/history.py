"""The last hour, minute by minute: how many runs ended (and how many of them failed)
and how long runs waited in their queue, for the dashboard's chart.

The Lua steps count it where the transitions happen, beside the lifetime counters
of metrics.py (`count_minute` in scripts/_lib.lua): one hash per partition and minute
of Redis's clock, `metrics:minute:{minute}`, with `ended|<status>` and
`wait|<ms>` fields (the wait rounded up to two significant digits, so the quantiles
read here are within 1% of the true ones), expiring after keys.MINUTE_KEPT_S.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from . import keys
from .broker import Broker, translated

MINUTE_MS = 60_000
HOUR_MINUTES = 60


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
    every partition summed in one pipelined round trip."""
    with translated():
        now_minute = broker.now_ms() // MINUTE_MS
        span = range(now_minute - minutes + 1, now_minute + 1)
        pipe = broker.redis.pipeline(transaction=False)
        for minute in span:
            for partition in range(broker.partitions):
                pipe.hgetall(keys.metrics_minute(partition, minute))
        replies = iter(pipe.execute())
    out = []
    for minute in span:
        ended: dict[str, int] = defaultdict(int)
        waits: dict[int, int] = defaultdict(int)
        for _ in range(broker.partitions):
            for name, n in next(replies).items():
                kind, _, what = name.partition("|")
                if kind == "ended":
                    ended[what] += int(n)
                elif kind == "wait" and what:
                    waits[int(what)] += int(n)
        out.append(Minute(minute * MINUTE_MS, dict(ended), dict(waits)))
    return out
