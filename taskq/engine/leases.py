"""One heartbeat for all the runs a worker holds, and the stops that come from
the clock or from Redis: a cancelled run, a lease taken over, a run past its
timeout, a shutdown's grace period over. Each stops its own run only; a run whose
code does not stop within `stuck_grace_s` of being asked (a thread blocked in a C
call) is handed to `on_stuck`, which ends it without waiting for its code."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .. import sync
from ..broker import Broker, Outage
from ..ids import partition_of
from .slot import Slot

log = logging.getLogger("taskq.worker")


class Supervisor(threading.Thread):
    """Renews every lease of the worker with one `heartbeat` script call each
    `heartbeat_s`, and interrupts runs as their reasons come."""

    def __init__(
        self,
        broker: Broker,
        slots: Callable[[], list[Slot]],
        on_beat: Callable[[], None],
        on_stuck: Callable[[Slot], None],
    ) -> None:
        super().__init__(name="taskq-leases", daemon=True)
        self.broker = broker
        self._slots = slots
        self._on_beat = on_beat
        self._on_stuck = on_stuck
        self._outage = Outage(log, "renewing leases")
        self._wake = sync.Event()  # set by the SIGTERM handler (shutdown_after) too
        self._stopped = False
        self._shutdown_at: float | None = None

    def changed(self) -> None:
        """New runs (with their deadlines) are in flight: plan again."""
        self._wake.set()

    def shutdown_after(self, grace_s: float) -> None:
        at = time.monotonic() + max(0.0, grace_s)
        if self._shutdown_at is None or at < self._shutdown_at:
            self._shutdown_at = at
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def run(self) -> None:
        beat_s = self.broker.settings.heartbeat_s
        grace_s = self.broker.settings.stuck_grace_s
        next_beat = time.monotonic() + beat_s
        while not self._stopped:
            slots = self._slots()
            wake = min(
                [
                    next_beat,
                    *(s.deadline for s in slots if s.reason is None),
                    *(s.interrupted_at + grace_s for s in slots if s.interrupted_at is not None and not s.ended),
                ]
            )
            if self._shutdown_at is not None:
                wake = min(wake, self._shutdown_at)
            self._wake.wait_and_clear(max(0.0, wake - time.monotonic()))
            if self._stopped:
                return
            now = time.monotonic()
            for slot in self._slots():
                if slot.reason is None and now >= slot.deadline:
                    log.info("run %s is past its timeout of %d s; stopping it", slot.run_id, slot.timeout_s)
                    slot.interrupt("timeout")
                if self._shutdown_at is not None and now >= self._shutdown_at and slot.interrupt("shutdown"):
                    log.info("run %s: shutdown grace period over; back to the queue", slot.run_id)
                if slot.stuck(now, grace_s):
                    self._on_stuck(slot)
            if now >= next_beat:
                next_beat = now + beat_s
                self.beat()

    def beat(self) -> None:
        try:
            self._on_beat()
            by_partition: dict[int, list[Slot]] = {}
            for slot in self._slots():
                by_partition.setdefault(partition_of(slot.run_id), []).append(slot)
            lease_ms = int(self.broker.settings.lease_s * 1000)
            answers: list[tuple[Slot, str]] = []
            for partition, slots in sorted(by_partition.items()):
                args: list[str | int] = [lease_ms]
                for slot in slots:
                    args += [slot.run_id, slot.token]
                answers += zip(slots, self.broker.scripts.heartbeat(partition, *args), strict=True)
        except Exception as exc:  # keep trying: the lease says how long we may
            self._outage.failed(exc)
            return
        self._outage.ok()
        for slot, state in answers:
            if state == "cancelling" and slot.interrupt("cancelled"):
                log.info("run %s was cancelled; stopping it", slot.run_id)
            elif state == "lost" and slot.interrupt("lost"):
                log.warning("run %s: lease lost to another worker; this attempt's result is dropped", slot.run_id)
