"""The worker as RQ sees it: registered in `rq:workers` with RQ's own worker
record, so `rq info` and rq-dashboard list it beside the queue depths. Its state
is `busy` while it holds a run and `idle` otherwise, as of its last beat (every
heartbeat_s, at most BEAT_S: a state written per claim would cost a command per
run)."""

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
        self.beat_s = min(BEAT_S, broker.settings.heartbeat_s)
        self.connection = connection = broker.rq_connection()
        self.worker = rq.SimpleWorker(
            [rq.Queue(q, connection=connection) for q in queues], connection=connection, name=name
        )
        self._last = 0.0
        self._state = "idle"
        self._abandoned = 0

    def birth(self) -> None:
        self.worker.register_birth()
        # Beside RQ's fields: how many runs this worker holds at once (`taskq info`).
        self.connection.hset(self.worker.key, "concurrency", self.concurrency)
        self.worker.set_state(self._state)
        self._last = time.monotonic()

    def beat(self, in_flight: int, abandoned: int = 0) -> None:
        if time.monotonic() - self._last >= 0.9 * self.beat_s:  # 0.9: the supervisor's own pace may jitter
            self._last = time.monotonic()
            self.worker.heartbeat()
            state = "busy" if in_flight else "idle"
            if state != self._state:
                self.worker.set_state(state)
                self._state = state
            if abandoned != self._abandoned:
                # Threads whose run was ended without them (stuck in a C call): `taskq info`.
                self.connection.hset(self.worker.key, "abandoned", abandoned)
                self._abandoned = abandoned

    def death(self) -> None:
        try:
            self.worker.register_death()
        except Exception:
            log.warning("could not unregister from RQ", exc_info=True)
        self.connection.close()
