"""Figure 9: limits, held across workers, and what they cost (bench/app.py holds the
processors).

(a) Exactness. Two `taskq worker` processes at concurrency 16 each drain, at once,
`capped_runs` runs of `bench_capped` (concurrency 4, each holding its slot 20 ms) and
`paced_runs` no-op runs of `bench_paced` (rate_limit 200/s, burst 1). From the run
records, `started_ms` and `finished_ms` (Redis's clock: the claim and the finish
wrote them; an attempt holds its units from one to the other), the bench counts the
starts that put a fifth capped run in flight (cap violations: must be 0) and the most
paced starts in any window of one second (must be at most the rate plus the burst,
201), as tests/test_flow_control.py does. It also reports the rate the paced runs
reached: a limit that holds by starving its runs shows there. The workers are
stopped once every run ended, or half as long again as the rate allows (plus 1 s).

(b) Cost. One worker at concurrency 32 drains no-op runs of `noop` (no limits), then
of `bench_bounded` (one Limit with a concurrency and a rate far above what is
reached: what is measured is the bookkeeping only), `limit_pairs` pairs in alternating
order; runs/s (the steady state, as figure 3) and Redis CPU per run. The cost is
the median of the pairs' ratios (each pair back to back, so the machine's drift,
larger than the cost, touches both alike).

RQ has no limits. Celery's `rate_limit` is per worker process (each keeps its own
token bucket: two workers start twice the rate) and it has no concurrency cap shared
by workers; their columns stay empty and the notes say so."""

from __future__ import annotations

import bisect
import statistics
import time
from dataclasses import dataclass

from taskq import keys

from .. import app
from ..harness import Process, wait_until
from ..report import Row
from ..session import Session
from .workers import Drain, drain_taskq

WORKERS = 2
WORKER_CONCURRENCY = 16
COST_CONCURRENCY = 32
WINDOW_MS = 1000  # the rate's period
COST_TARGET = 0.15
PEERS = "RQ has no limits; Celery's rate_limit is per worker process and it has no shared concurrency cap"


@dataclass
class Exactness:
    runs: int  # capped runs that ran (one attempt each)
    most: int  # most capped runs in flight at once
    violations: int  # starts that put more than app.CAP in flight
    paced: int  # paced runs that started
    most_in_window: int  # most paced starts in any window of WINDOW_MS
    rate: float  # paced starts per second (Timed.rate)
    window_s: float  # how long the workers were given
    retried: int  # runs with more than one attempt (not counted above)
    alone_paced: int  # paced runs started by one worker on its own
    alone_rate: float
    alone_window_s: float


def run(s: Session) -> None:
    ex = _exactness(s)
    s.results.details["limits_exactness"] = vars(ex)
    s.results.add(
        Row(
            f"9 cap violations, concurrency {app.CAP}",
            ex.violations,
            None,
            "starts",
            "0",
            ex.violations == 0 and ex.runs > 0,
            f"most at once {ex.most}, {ex.runs} runs of {app.CAPPED_S * 1000:.0f} ms on {WORKERS} workers x "
            f"c={WORKER_CONCURRENCY}" + (f"; {ex.retried} retried, not counted" if ex.retried else "") + f"; {PEERS}",
        )
    )
    s.results.add(
        Row(
            f"9 most starts in 1 s, rate_limit {app.RATE}/s",
            ex.most_in_window,
            None,
            "starts",
            f"<= {app.RATE + 1} (rate + burst)",
            ex.most_in_window <= app.RATE + 1 and ex.paced > 0,
            f"{PEERS} (2 workers: twice the rate)",
        )
    )
    for label, rate, started, window_s, who in (
        ("", ex.rate, ex.paced, ex.window_s, f"{WORKERS} workers x c={WORKER_CONCURRENCY}, beside the capped runs"),
        (", 1 worker", ex.alone_rate, ex.alone_paced, ex.alone_window_s, f"one worker at c={COST_CONCURRENCY}"),
    ):
        wanted = s.mode.paced_runs if not label else s.mode.paced_runs // 2
        s.results.add(
            Row(
                f"9 starts/s reached, rate_limit {app.RATE}/s{label}",
                rate,
                None,
                "/s",
                f">= {app.RATE * 0.9:.0f} (90 % of the rate)",
                rate >= app.RATE * 0.9,
                f"{started} of {wanted} started within {window_s:.1f} s; {who}",
            )
        )
    plain, limited = _cost(s)
    rate_plain = statistics.median(d.rate for d in plain)
    rate_limited = statistics.median(d.rate for d in limited)
    # Each pair ran back to back: its ratio is the steadiest measure of the cost on a
    # machine whose speed drifts by more than the cost between one pair and the next.
    costs = [1 - b.rate / a.rate for a, b in zip(plain, limited, strict=True)]
    cost = statistics.median(costs)
    s.results.details["limits_cost"] = {"plain": [vars(d) for d in plain], "limited": [vars(d) for d in limited]}
    s.results.add(
        Row(
            f"9 no-op runs/s under limits, c={COST_CONCURRENCY}",
            rate_limited,
            None,
            "runs/s",
            f"<= {COST_TARGET * 100:.0f} % throughput cost",
            cost <= COST_TARGET,
            f"cost {cost:.0%}: the median of {len(costs)} pairs run back to back, in alternating order "
            f"({', '.join(f'{c:+.0%}' for c in costs)}); medians {rate_limited:,.0f}/s with limits, "
            f"{rate_plain:,.0f}/s without; {PEERS}",
        )
    )
    us_plain = statistics.median(d.redis_us for d in plain)
    us_limited = statistics.median(d.redis_us for d in limited)
    commands = statistics.median(d.commands for d in limited) - statistics.median(d.commands for d in plain)
    s.results.add(
        Row(
            "9 Redis CPU/run under limits",
            us_limited,
            None,
            "us",
            "(cost of bookkeeping)",
            None,
            f"without limits {us_plain:.0f} us ({us_limited / us_plain - 1:+.0%}); {commands:+.1f} commands per run",
        )
    )


def _exactness(s: Session) -> Exactness:
    mode = s.mode
    capped_s = mode.capped_runs * app.CAPPED_S / app.CAP
    runs = {"bench_capped": mode.capped_runs, "bench_paced": mode.paced_runs}
    both = _timed_drain(s, runs, WORKERS, WORKER_CONCURRENCY, capped_s)
    alone = _timed_drain(s, {"bench_paced": mode.paced_runs // 2}, 1, COST_CONCURRENCY)
    most, violations = _most_at_once(both.held["bench_capped"], app.CAP)
    starts = sorted(start for start, _ in both.held["bench_paced"])
    return Exactness(
        len(both.held["bench_capped"]),
        most,
        violations,
        len(starts),
        _most_in_window(starts, WINDOW_MS),
        both.rate("bench_paced"),
        both.window_s,
        both.retried + alone.retried,
        len(alone.held["bench_paced"]),
        alone.rate("bench_paced"),
        alone.window_s,
    )


@dataclass
class Timed:
    """What a timed drain left in the run records."""

    held: dict[str, list[tuple[int, int]]]  # processor -> (started_ms, finished_ms) of its runs, as _held
    wanted: dict[str, int]  # processor -> runs made
    retried: int
    window_s: float  # the time given
    stopped_ms: int  # when the workers were told to stop (Redis's clock)

    def rate(self, processor: str) -> float:
        """Starts per second: first to last when every run started in time, else first
        to the stop."""
        starts = sorted(start for start, _ in self.held[processor])
        if not starts:
            return 0.0
        if len(starts) == self.wanted[processor] and starts[-1] > starts[0]:
            return (len(starts) - 1) * 1000 / (starts[-1] - starts[0])
        return len(starts) * 1000 / max(1, self.stopped_ms - starts[0])


def _timed_drain(s: Session, runs: dict[str, int], workers: int, concurrency: int, other_s: float = 0.0) -> Timed:
    """Fills `runs` (processor -> count), then `workers` workers drain them: until every
    run ended, or for half as long again as the rate (or `other_s`) allows, plus 1 s,
    from the first run's end."""
    with s.serving("bench.app"):
        s.reset()
        ids = {proc: s.fill_taskq(n, processor=proc) for proc, n in runs.items()}
        every = [run_id for batch in ids.values() for run_id in batch]
        procs = [
            s.spawner.taskq_worker(s.settings, burst=False, name=f"taskq-limits-{i}", concurrency=concurrency)
            for i in range(workers)
        ]
        wait_until(lambda: _count_ended(s, every) > 0 or _any_exited(procs), 60, "a first run", interval_s=0.02)
        window_s = max(runs.get("bench_paced", 0) / app.RATE, other_s) * 1.5 + 1
        deadline = time.monotonic() + window_s
        while time.monotonic() < deadline and _count_ended(s, every) < len(every) and not _any_exited(procs):
            time.sleep(0.05)
        seconds, micros = s.r.time()
        for proc in procs:
            proc.stop()
    held: dict[str, list[tuple[int, int]]] = {}
    retried = 0
    for proc_name, batch in ids.items():
        held[proc_name], again = _held(s, batch)
        retried += again
    return Timed(held, runs, retried, window_s, int(seconds) * 1000 + int(micros) // 1000)


def _any_exited(workers: list[Process]) -> bool:
    for proc in workers:
        if not proc.running():
            raise RuntimeError(f"worker exited early:\n{proc.output()[-3000:]}")
    return False


def _count_ended(s: Session, run_ids: list[str]) -> int:
    pipe = s.r.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hget(keys.run(run_id), "finished_ms")
    return sum(1 for v in pipe.execute() if v is not None)


def _held(s: Session, run_ids: list[str]) -> tuple[list[tuple[int, int]], int]:
    """(started_ms, finished_ms) of each run that ran once and ended; and how many
    ran more than once (their earlier attempts are not in the record)."""
    pipe = s.r.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.run(run_id), "attempts", "started_ms", "finished_ms")
    out, retried = [], 0
    for attempts, started, finished in pipe.execute():
        if attempts not in (None, "0", "1"):
            retried += 1
        elif started is not None and finished is not None:
            out.append((int(started), int(finished)))
    return out, retried


def _most_at_once(intervals: list[tuple[int, int]], cap: int) -> tuple[int, int]:
    """The most intervals open at one moment, and the starts that made more than `cap`
    open (one that ends as another starts: not both)."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = now = over = 0
    for _, step in edges:
        now += step
        most = max(most, now)
        if step > 0 and now > cap:
            over += 1
    return most, over


def _most_in_window(starts: list[int], window_ms: int) -> int:
    """The most starts in any window [t, t + window_ms] (sorted starts)."""
    return max((bisect.bisect_right(starts, t + window_ms) - i for i, t in enumerate(starts)), default=0)


def _cost(s: Session) -> tuple[list[Drain], list[Drain]]:
    """`limit_pairs` drains of each, the order alternating, so drift hits both alike."""
    plain: list[Drain] = []
    limited: list[Drain] = []
    n = s.mode.limit_runs
    with s.serving("bench.app"):
        for i in range(s.mode.limit_pairs):
            for which in ("plain", "limited") if i % 2 == 0 else ("limited", "plain"):
                if which == "plain":
                    plain.append(drain_taskq(s, "noop", n, 1, COST_CONCURRENCY))
                else:
                    limited.append(drain_taskq(s, "bench_bounded", n, 1, COST_CONCURRENCY))
    return plain, limited
