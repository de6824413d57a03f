"""Ends attempts in batches: every outcome that is ready goes to Redis in one
`finish` script call, so a busy worker pays one round trip for many runs; the same
call takes new runs for the slots it frees (`Refill`), so a freed slot never waits
for a second round trip.

No batch waits to fill: outcomes that come while a call is under way go in the next
one (the busier the worker, the larger its batches)."""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

from ..broker import Broker, unavailable
from ..ids import partition_of
from ..outputs import payloads
from ..record import RunRecord
from .attempt import Outcome
from .claims import Claimer
from .slot import Slot

log = logging.getLogger("taskq.worker")

Item = tuple[Slot, Outcome]
GATHER_S = 0.0002


class Refill(Protocol):
    """The engine's side of taking runs in a finish."""

    claimer: Claimer

    def reserve(self, freeing: int) -> int:
        """Reserves every slot that is free once `freeing` more are; returns how many."""
        ...

    def started(self, records: list[RunRecord], reserved: int) -> None:
        """Begins the runs taken; the reservation ends."""
        ...


class Finisher(threading.Thread):
    """Writes outcomes as they come, all those waiting in one call; then hands the
    slots back (`on_done`), so the engine frees them only once their end is
    written."""

    def __init__(self, broker: Broker, on_done: Callable[[list[Slot]], None], refill: Refill | None = None) -> None:
        super().__init__(name="taskq-finisher", daemon=True)
        self.broker = broker
        self._on_done = on_done
        self._refill = refill
        self._items: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._closed = False

    def put(self, slot: Slot, outcome: Outcome) -> None:
        self._items.put((slot, outcome))

    def close(self, timeout_s: float = 10) -> None:
        """Writes what is waiting, then stops."""
        self._items.put(None)
        self.join(timeout_s)

    def run(self) -> None:
        while True:
            item = self._items.get()
            batch: list[Item] = []
            last = item is None
            if item is not None:
                batch.append(item)
            until = time.monotonic() + GATHER_S
            while not last:  # and whatever else has ended meanwhile
                try:
                    more = self._items.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    last = True
                else:
                    batch.append(more)
            if batch:
                self._write(batch)
            if last:
                return

    def _write(self, batch: list[Item]) -> None:
        writes = [(slot, outcome) for slot, outcome in batch if outcome.what != "lost"]
        by_partition: dict[int, list[Item]] = {}
        for slot, outcome in writes:
            by_partition.setdefault(partition_of(slot.run_id), []).append((slot, outcome))
        # New runs are taken with the last write, for every slot free once these are.
        reserved, taken = 0, []
        refill = self._refill
        try:
            order = sorted(by_partition.items())
            for n, (partition, items) in enumerate(order):
                want = 0
                if refill is not None and n == len(order) - 1 and refill.claimer.worth_claiming(partition):
                    want = reserved = refill.reserve(freeing=len(batch))
                taken = self._write_partition(partition, items, want)
        except Exception:  # not Redis being away (that is waited out): a bug; the leases end these runs
            log.exception("writing %d outcome(s) failed", len(writes))
        finally:
            self._on_done([slot for slot, _ in batch])
            if refill is not None and reserved:
                refill.started(taken, reserved)

    def _write_partition(self, partition: int, writes: list[Item], want: int) -> list[RunRecord]:
        """Writes the outcomes; returns the runs taken for `want` slots (claim_runs)."""
        settings = self.broker.settings
        args: list[Any] = [
            settings.retention_s,
            int(settings.retry_backoff_base_s * 1000),
            int(settings.retry_backoff_cap_s * 1000),
            settings.action_timeout_s * 1000,
            self.broker.rq_mirror,
            len(writes),
        ]
        for slot, outcome in writes:
            args += [
                slot.run_id,
                slot.token,
                outcome.what,
                outcome.arg,
                json.dumps(outcome.error) if outcome.error else "",
                f"{random.uniform(0.5, 1.0):.3f}",
                2 * len(outcome.fields),
            ]
            for name, value in outcome.fields.items():
                args += [name, value]
        args.append(want)
        marks = 0
        if want and self._refill is not None:
            claimer = self._refill.claimer
            marks = claimer.marks(partition)
            args += [int(settings.lease_s * 1000), claimer.token_base, *claimer.request]
        for wait_s in (0.1, 0.2, 0.5, 1, 2, 5, 5, 10, 10, 15, 30, 30, 60):
            try:
                ended = self.broker.scripts.finish(partition, *args)
                break
            except redis.RedisError as exc:
                if not unavailable(exc):
                    raise
                log.warning("writing %d outcome(s) failed (Redis unavailable); again in %g s", len(writes), wait_s)
                time.sleep(wait_s)
        else:  # the leases ran out long ago: the reaper retries these runs
            log.error("gave up writing %d outcome(s): Redis unreachable", len(writes))
            return []
        for (slot, outcome), status in zip(writes, ended, strict=False):
            if status == "":
                log.warning("run %s: attempt ended after its lease was lost; result dropped", slot.run_id)
                payloads.discard(self.broker, outcome.fields.values())
            elif outcome.what == "error":
                log.info(
                    "run %s attempt %d: %s; now %s",
                    slot.run_id,
                    slot.record.attempts,
                    (outcome.error or {}).get("message"),
                    status,
                )
        if want and self._refill is not None:
            return self._refill.claimer.took(partition, marks, ended[len(writes) :])
        return []
