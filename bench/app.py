"""The bench's own processors (figure 9, limits), served beside the example app's
(`workers.app`) by the figures that need them: `TASKQ_APP=workers.app,bench.app`.

- `bench_capped`: at most 4 at once across every worker, each holding its slot 20 ms;
- `bench_paced`: at most 200 starts a second across every worker (GCRA, burst 1);
- `bench_bounded`: a no-op with a concurrency limit and a rate limit far above what
  one worker reaches, so that only the limits' bookkeeping is measured against the
  example app's `noop`.
"""

from __future__ import annotations

import time

from taskq import Limit, task

CAP = 4  # bench_capped's concurrency
RATE = 200  # bench_paced's starts per second
CAPPED_S = 0.02  # how long a bench_capped run holds its slot

# Far above what a worker reaches (a few thousand no-op runs a second on this kind
# of machine). A burst this size keeps the rate's bucket from refusing a second start
# within one millisecond of Redis's clock, which a 1,000+/s rate with burst 1 would.
WIDE = Limit("bench-wide", rate_limit="1000000/s", concurrency=100_000, burst=10_000)


@task(name="bench_capped", concurrency=CAP)
def capped(inp: dict) -> dict:
    """Holds one of CAP slots for CAPPED_S (a blocking sleep)."""
    time.sleep(CAPPED_S)
    return {}


@task(name="bench_paced", rate_limit=f"{RATE}/s")
def paced(inp: dict) -> dict:
    """Does nothing, at most RATE starts a second."""
    return {}


@task(name="bench_bounded", limits=[WIDE])
def bounded(inp: dict) -> dict:
    """Does nothing, under a limit it never reaches: the cost of flow control alone."""
    return {}
