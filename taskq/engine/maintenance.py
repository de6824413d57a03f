"""The worker's maintenance thread: lost runs reaped (and runs left unanswered in
action_required failed), due runs and paused lanes that no claim looked at moved on,
the metrics snapshotted once a minute for the dashboard's chart (history.py), output
files of expired runs deleted; in every partition (scripts/tend.lua)."""

from __future__ import annotations

import logging
import random
import threading

from .. import outputs
from ..broker import Broker, Outage

log = logging.getLogger("taskq.worker")

BATCH = 500


class Maintenance(threading.Thread):
    """Promotes due retries and reaps lost runs every `reaper_interval_s`, until
    stopped. Every worker runs one; the scripts make concurrent rounds safe."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(name="taskq-maintenance", daemon=True)
        self.broker = broker
        self.stopped = threading.Event()

    def run(self) -> None:
        outage = Outage(log, "maintenance")
        while not self.stopped.wait(self.broker.settings.reaper_interval_s):
            try:
                self.tick()
            except Exception as exc:  # try again next round
                outage.failed(exc)
            else:
                outage.ok()

    def tick(self) -> None:
        for partition in range(self.broker.partitions):
            reaped = self.tend(partition)
            if reaped:
                log.warning("reaped %d run(s) whose worker was lost: %s", len(reaped), ", ".join(reaped[:10]))
            outputs.sweep(self.broker, partition)  # files of expired runs

    def tend(self, partition: int, minute: int | None = None) -> list[str]:
        """One round of tend.lua in `partition`; returns the ids of the runs it reaped
        or failed. `minute` (epoch ms // 60000) is the minute whose metrics snapshot it
        takes if that minute has none yet: tests take past ones; else Redis's current
        minute."""
        settings = self.broker.settings
        reaped: list[str] = self.broker.scripts.tend(
            partition,
            BATCH,
            settings.retention_s,
            int(settings.retry_backoff_base_s * 1000),
            int(settings.retry_backoff_cap_s * 1000),
            f"{random.uniform(0.5, 1.0):.3f}",
            self.broker.rq_mirror,
            *([] if minute is None else [minute]),
        )
        return reaped
