"""The worker's maintenance thread: due retries back on their queue, lost runs
reaped (and runs left unanswered in action_required failed), runs stranded in an
RQ intermediate list rescued, output files of expired runs deleted."""

from __future__ import annotations

import logging
import random
import threading

from .. import outputs
from ..broker import Broker, Outage, rq_job_data, rq_now

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
        scripts, settings = self.broker.scripts, self.broker.settings
        reaped = scripts.reap(
            args=[
                BATCH,
                settings.retention_s,
                int(settings.retry_backoff_base_s * 1000),
                int(settings.retry_backoff_cap_s * 1000),
                f"{random.uniform(0.5, 1.0):.3f}",
            ]
        )
        if reaped:
            log.warning("reaped %d run(s) whose worker was lost: %s", len(reaped), ", ".join(reaped[:10]))
        rescued = scripts.rescue(args=[int(2 * settings.lease_s * 1000)])
        if rescued:
            log.warning(
                "put back %d run(s) stranded in an RQ intermediate list: %s", len(rescued), ", ".join(rescued[:10])
            )
        scripts.promote(args=[rq_now(), rq_job_data(), BATCH])
        outputs.sweep(self.broker)  # files of expired runs
