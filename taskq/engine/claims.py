"""Taking runs: one `claim` script call per partition takes as many runs of the
processors this worker serves as it has free slots, lanes taking turns
(scripts/claim.lua); an idle worker waits without polling.

The wait: every claim of a partition says whether ready lanes are left there and when
its next run is due (a retry, a run made for later, a paused lane). The worker keeps
that per partition: `hot` partitions are claimed from, and a partition comes due at
its time. Besides, a `Waker` thread subscribes to the wake-up channel of each
processor served (`taskq:wake:{processor}`, published by the scripts when a lane
becomes ready or a run is made for later) and marks the partition it names hot; a
worker waiting on nothing wakes at once, on one connection however many processors
and partitions there are."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from redis import Redis

from .. import keys
from ..broker import Broker, Outage, connect
from ..clock import now_ms
from ..limits import Budget
from ..processor import Processor
from ..record import RunRecord

log = logging.getLogger("taskq.worker")

# Every partition is claimed from at least this often, wake-ups or not: the safety net
# for a wake-up lost (a Redis failover drops Pub/Sub messages in flight).
SWEEP_S = 5.0


class Wakeable(Protocol):
    def set(self) -> None: ...


def budgets(processors: Iterable[Processor], tenant_concurrency: int) -> dict[str, Budget]:
    """The budget of every limit the processors' runs can need, by name ('p:<processor>',
    'n:<limit>', 't' for the per-tenant cap): what a claim checks them against."""
    out: dict[str, Budget] = {}
    for proc in processors:
        if proc.flow.own is not None:
            out[f"p:{proc.name}"] = proc.flow.own
        for name, budget, _units in proc.flow.shared:
            out[f"n:{name}"] = budget
    if tenant_concurrency:
        out["t"] = Budget(concurrency=tenant_concurrency)
    return out


class Claimer:
    def __init__(self, broker: Broker, processors: list[Processor], token_base: str) -> None:
        self.broker = broker
        self.token_base = token_base
        self.names = sorted(p.name for p in processors)
        self.budget_args: list[str | int | float] = []
        found = budgets(processors, broker.settings.tenant_concurrency)
        self.budget_args.append(len(found))
        for name, b in sorted(found.items()):
            self.budget_args += [name, b.concurrency, b.rate.interval_ms if b.rate else 0, b.burst]
        self.hot: set[int] = set(range(broker.partitions))  # where ready lanes may be: all, at first
        self.due_ms: dict[int, float] = {}  # partition -> when its next run is due (Redis's clock)
        self._marks: dict[int, int] = {}  # partition -> wake-ups so far (see _claim_from)
        self._swept = time.monotonic()
        self._lock = threading.Lock()
        self._next = 0

    def mark_hot(self, partition: int) -> None:
        with self._lock:
            self.hot.add(partition)
            self._marks[partition] = self._marks.get(partition, 0) + 1

    def claim(self, count: int) -> list[RunRecord]:
        """Up to `count` runs, now running under leases held by this worker: from the
        partitions with ready lanes (in turn) and those whose due time has come."""
        now = now_ms()
        with self._lock:
            if time.monotonic() - self._swept >= SWEEP_S:  # the safety net: look everywhere
                self.hot.update(range(self.broker.partitions))
                self._swept = time.monotonic()
            for partition, due in list(self.due_ms.items()):
                if due <= now:
                    self.hot.add(partition)
                    del self.due_ms[partition]
            order = sorted(self.hot, key=lambda p: (p - self._next) % max(1, self.broker.partitions))
        taken: list[RunRecord] = []
        for partition in order:
            if len(taken) >= count:
                break
            taken += self._claim_from(partition, count - len(taken))
            self._next = partition + 1
        return taken

    def _claim_from(self, partition: int, count: int) -> list[RunRecord]:
        settings = self.broker.settings
        marks = self.marks(partition)
        reply = self.broker.scripts.claim(
            partition,
            int(settings.lease_s * 1000),
            settings.retention_s,
            self.token_base,
            count,
            self.broker.rq_mirror,
            *self.request,
        )
        return self.took(partition, marks, reply)

    @property
    def request(self) -> list[str | int | float]:
        """What this worker serves, as the scripts read it (_lib.lua, read_request)."""
        return [len(self.names), *self.names, *self.budget_args]

    def worth_claiming(self, partition: int) -> bool:
        """Whether runs may be ready in the partition (a finish takes runs only then)."""
        with self._lock:
            return partition in self.hot or self.due_ms.get(partition, float("inf")) <= now_ms()

    def marks(self, partition: int) -> int:
        """The wake-ups of the partition so far: pass to `took` with the reply."""
        with self._lock:
            return self._marks.get(partition, 0)

    def took(self, partition: int, marks: int, reply: list[object]) -> list[RunRecord]:
        """The runs a claim took, from its reply ({next_due, more, runs...}); notes
        whether the partition has ready lanes left and when it is next due."""
        next_due, more, *records = reply
        due = float(str(next_due)) if next_due else None
        with self._lock:
            # Not hot any more, unless a wake-up came while the script ran: that one
            # may be about a lane made ready after the script looked.
            if not more and self._marks.get(partition, 0) == marks:
                self.hot.discard(partition)
            if due is not None:
                self.due_ms[partition] = min(due, self.due_ms.get(partition, float("inf")))
        return [RunRecord.from_hash(flat) for flat in records]  # type: ignore[arg-type]

    def next_wake_s(self, cap_s: float) -> float:
        """How long an idle worker may wait before something here comes due."""
        with self._lock:
            if self.hot:
                return 0.0
            soonest = min(self.due_ms.values(), default=None)
        if soonest is None:
            return cap_s
        return max(0.0, min(cap_s, (soonest - now_ms()) / 1000))


class Waker(threading.Thread):
    """Listens on the wake-up channels of the processors served; a message names a
    partition, which becomes hot, and wakes the engine."""

    def __init__(self, broker: Broker, processors: list[str], claimer: Claimer, wake: Wakeable) -> None:
        super().__init__(name="taskq-waker", daemon=True)
        self.url = broker.settings.redis_url
        self.client: Redis | None = None  # made in the thread: Redis may not answer yet
        self.channels = [keys.WAKE + name for name in processors]
        self.claimer = claimer
        self.wake = wake
        self.stopped = False
        self.outage = Outage(log, "listening for new runs")
        self.ready = threading.Event()  # subscribed: no wake-up sent from now on is missed

    def stop(self) -> None:
        self.stopped = True
        try:
            if self.client is not None:
                self.client.close()  # ends a blocking read under way
        except Exception:  # already gone
            pass
        self.join(1)
        if self.client is not None:
            self.client.close()

    def run(self) -> None:
        while not self.stopped:
            try:
                self._listen()
            except Exception as exc:  # Redis away, or our own disconnect in stop()
                if self.stopped:
                    return
                self.outage.failed(exc)
                time.sleep(1)
            # Back after a gap: whatever was published meanwhile is lost, so look everywhere.
            for partition in range(self.claimer.broker.partitions):
                self.claimer.mark_hot(partition)
            self.wake.set()

    def _listen(self) -> None:
        if self.client is None:
            self.client = connect(self.url)
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            if self.channels:
                pubsub.subscribe(*self.channels)
            self.ready.set()
            self.outage.ok()
            while not self.stopped:
                message = pubsub.get_message(timeout=5.0) if self.channels else None
                if message is None:
                    if not self.channels:
                        time.sleep(5.0)
                    continue
                self.claimer.mark_hot(partition_of_tag(str(message["data"])))
                self.wake.set()
        finally:
            pubsub.close()


def partition_of_tag(tag: str) -> int:
    """A partition's number from its tag (keys.tag: "<number>.<n>")."""
    return int(tag.split(".", 1)[0])
