"""The worker's scheduler thread: fires the ticks of the schedules of the processors
it serves (schedule.py). Every worker that serves one runs it; the guard on the
create step makes exactly one of them make each tick's run."""

from __future__ import annotations

import logging
import threading

from .. import keys, lanes
from ..broker import Broker, Outage
from ..catalog import Catalog
from ..client import default_tenant
from ..clock import iso
from ..jsontext import parse
from ..models import RunInput
from ..processor import Processor
from ..run import Guard, NewRun, create, prepare
from ..schedule import Schedule

log = logging.getLogger("taskq.worker")

MAX_SLEEP_S = 5.0  # looks again at least this often (a schedule changed by a deploy, Redis back)


class Scheduler(threading.Thread):
    def __init__(self, broker: Broker, processors: list[Processor]) -> None:
        super().__init__(name="taskq-scheduler", daemon=True)
        self.broker = broker
        self.schedules = [p.schedule for p in processors if p.schedule is not None]
        self.specs = {p.name: p.spec(broker.settings) for p in processors}
        self.catalog = Catalog(broker, self.specs)
        self.stopped = threading.Event()
        self.outage = Outage(log, "firing schedules")

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                wait_s = min([MAX_SLEEP_S, *(self.tend(s) for s in self.schedules)])
            except Exception as exc:
                self.outage.failed(exc)
                wait_s = 1.0
            else:
                self.outage.ok()
            self.stopped.wait(max(0.0, wait_s))

    def partition(self, schedule: Schedule) -> int:
        """Where the schedule's state and its runs live: with the runs they share limits
        with (lanes.place), else a partition of its own; the same at every tick."""
        body = {"processor": schedule.processor, "input": schedule.input or {}}
        spec = self.specs[schedule.processor]
        colocate = lanes.place(parse(RunInput, body), spec, default_tenant(self.broker)).colocate
        if not colocate and self.broker.settings.tenant_concurrency:
            colocate = f"t:{default_tenant(self.broker)}"
        return self.broker.partition_for(colocate or f"schedule:{schedule.processor}")

    def tend(self, schedule: Schedule) -> float:
        """Fires the schedule's tick if it is due; returns how long until its next one."""
        partition = self.partition(schedule)
        now = self.broker.now_ms()
        next_ms, spec = self.broker.redis.hmget(keys.schedule(partition, schedule.processor), "next", "spec")
        expected = int(next_ms) if next_ms else None
        if expected is None or spec != schedule.describe():
            # New, or changed by a deploy: its first tick is the next one from now.
            first = schedule.next_after(now)
            self._create(partition, schedule, expected, first, None, [])
            return (first - now) / 1000
        if now < expected:
            return (expected - now) / 1000
        tick = schedule.latest_at_or_before(now)
        missed = schedule.ticks_between(expected, tick)
        metadata = {"taskq_schedule_tick": iso(tick), "taskq_schedule_ticks": missed}
        body = {"processor": schedule.processor, "input": schedule.input or {}, "metadata": metadata}
        new = prepare(
            self.broker, self.catalog, default_tenant(self.broker), parse(RunInput, body), partition=partition
        )
        made = self._create(partition, schedule, expected, schedule.next_after(now), tick, [new])
        if made:
            log.info("schedule %s: tick %s fired as run %s", schedule.processor, iso(tick), made[0])
            if missed > 1:
                log.warning("schedule %s: %d ticks came while no worker was up; one run stands for them",
                            schedule.processor, missed)  # fmt: skip
        return (schedule.next_after(now) - now) / 1000

    def _create(
        self,
        partition: int,
        schedule: Schedule,
        expected: int | None,
        next_ms: int,
        tick: int | None,
        runs: list[NewRun],
    ) -> list[str]:
        guard = Guard(schedule.processor, expected, next_ms, tick, schedule.describe())
        tenant = default_tenant(self.broker)
        made, _ = create(self.broker, runs, tenant=tenant, guard=guard, partition=partition)
        return made

    def stop(self) -> None:
        self.stopped.set()
        self.join(2)
