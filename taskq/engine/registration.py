"""The worker as RQ sees it: registered in `rq:workers` with RQ's own worker
record, so `rq info` and rq-dashboard list it beside the queue depths."""

from __future__ import annotations

import logging
import time

import rq

from ..broker import Broker

log = logging.getLogger("taskq.worker")

BEAT_S = 10  # RQ's record lives worker_ttl (420 s); beating every 10 s keeps it


class Registration:
    def __init__(self, broker: Broker, queues: list[str], name: str, concurrency: int = 1) -> None:
        self.concurrency = concurrency
        self.connection = connection = broker.rq_connection()
        self.worker = rq.SimpleWorker([rq.Queue(q, connection=connection) for q in queues], connection=connection,
                                      name=name)  # fmt: skip
        self._last = 0.0

    def birth(self) -> None:
        self.worker.register_birth()
        # Beside RQ's fields: how many runs this worker holds at once (`taskq info`).
        self.connection.hset(self.worker.key, "concurrency", self.concurrency)
        self.worker.set_state("busy")
        self._last = time.monotonic()

    def beat(self) -> None:
        if time.monotonic() - self._last >= BEAT_S:
            self._last = time.monotonic()
            self.worker.heartbeat()

    def death(self) -> None:
        try:
            self.worker.register_death()
        except Exception:
            log.warning("could not unregister from RQ", exc_info=True)
        self.connection.close()
