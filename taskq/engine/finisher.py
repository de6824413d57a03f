"""Ends attempts in batches: every outcome that is ready goes to Redis in one
`finish` script call, so a busy worker pays one round trip for many runs."""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ..broker import Broker, unavailable
from ..ids import partition_of
from .attempt import Outcome
from .slot import Slot

log = logging.getLogger("taskq.worker")

Item = tuple[Slot, Outcome]

# After the first outcome of a batch, wait this long for more: runs that end
# within a few ms of each other share one script call (fewer Redis commands per
# run) at the cost of freeing their slots that much later.
GATHER_S = 0.002


class Finisher(threading.Thread):
    """Writes outcomes as they come, all those waiting in one call; then hands the
    slots back (`on_done`), so the engine frees them only once their end is
    written."""

    def __init__(self, broker: Broker, on_done: Callable[[list[Slot]], None], in_flight: Callable[[], int]) -> None:
        super().__init__(name="taskq-finisher", daemon=True)
        self.broker = broker
        self._on_done = on_done
        self._in_flight = in_flight
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
            while not last and len(batch) < self._in_flight():  # more may end soon
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
                self._on_done([slot for slot, _ in batch])
            if last:
                return

    def _write(self, batch: list[Item]) -> None:
        writes = [(slot, outcome) for slot, outcome in batch if outcome.what != "lost"]
        by_partition: dict[int, list[Item]] = {}
        for slot, outcome in writes:
            by_partition.setdefault(partition_of(slot.run_id), []).append((slot, outcome))
        for partition, items in sorted(by_partition.items()):
            self._write_partition(partition, items)

    def _write_partition(self, partition: int, writes: list[Item]) -> None:
        settings = self.broker.settings
        args: list[Any] = [
            settings.retention_s,
            int(settings.retry_backoff_base_s * 1000),
            int(settings.retry_backoff_cap_s * 1000),
            settings.action_timeout_s * 1000,
            self.broker.rq_mirror,
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
            return
        for (slot, outcome), status in zip(writes, ended, strict=True):
            if status == "":
                log.warning("run %s: attempt ended after its lease was lost; result dropped", slot.run_id)
            elif outcome.what == "error":
                log.info(
                    "run %s attempt %d: %s; now %s",
                    slot.run_id,
                    slot.record.attempts,
                    (outcome.error or {}).get("message"),
                    status,
                )
