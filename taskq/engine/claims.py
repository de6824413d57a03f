"""Taking runs: one `claim` script call takes as many runs as there are free
slots; an idle worker waits for the next one with a blocking read that consumes
nothing.

The wait: `BLMOVE rq:queue:X rq:queue:X LEFT LEFT` on the same list pops the
first job id and pushes it back where it was, so it is a blocking peek that
changes nothing. It returns as soon as the queue has a job, and the claim script
then takes it atomically, with the lease, so a worker that dies while waiting or
between the two strands nothing. With several queues, one waiter thread per
queue (each on its own connection) peeks at its queue; the first to see a job
wakes the engine, which claims from all its queues in their order."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from .. import keys
from ..broker import Broker, Outage, connect
from ..record import RunRecord

log = logging.getLogger("taskq.worker")

PEEK_S = 2  # one blocking read waits at most this long, then looks again


class Wakeable(Protocol):
    def set(self) -> None: ...


class Claimer:
    def __init__(self, broker: Broker, queues: list[str], token_base: str) -> None:
        self.broker = broker
        self.queues = queues
        self.token_base = token_base

    def claim(self, count: int) -> list[RunRecord]:
        """Up to `count` runs, now running under a lease held by this worker."""
        settings = self.broker.settings
        reply = self.broker.scripts.claim(
            args=[int(settings.lease_s * 1000), settings.retention_s, self.token_base, count, *self.queues]
        )
        return [RunRecord.from_hash(flat) for flat in reply]


class Peeker(threading.Thread):
    """Waits, when asked (`arm`), until its queue has a job, then wakes the engine."""

    def __init__(self, broker: Broker, queue: str, wake: Wakeable) -> None:
        super().__init__(name=f"taskq-peek-{queue}", daemon=True)
        self.key = keys.rq_queue(queue)
        self.client = connect(broker.settings.redis_url)
        self.wake = wake
        self.armed = threading.Event()
        self.stopped = False
        self.outage = Outage(log, f"waiting for runs on {queue}")

    def arm(self) -> None:
        self.armed.set()

    def stop(self) -> None:
        self.stopped = True
        self.armed.set()
        self.client.connection_pool.disconnect()  # ends a blocking read under way
        self.join(1)
        self.client.close()

    def run(self) -> None:
        while not self.stopped:
            self.armed.wait()
            if self.stopped:
                return
            try:
                seen = self.client.blmove(self.key, self.key, PEEK_S, "LEFT", "LEFT")
            except Exception as exc:  # Redis away, or our own disconnect in stop()
                if self.stopped:
                    return
                self.outage.failed(exc)
                time.sleep(1)
                self.wake.set()  # the engine claims again (and so finds out whether Redis is back)
                continue
            self.outage.ok()
            if seen is not None:
                self.armed.clear()
                self.wake.set()
