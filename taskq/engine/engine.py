"""The engine: one worker process carrying up to `concurrency` runs at once.

    claim (one script per partition: up to as many runs as free slots, lanes in turn)
      -> a slot per run: a thread (pool `threads`), a child process (pool
         `processes`), or a task on the event loop (`async def` processors)
      -> outcome -> finisher (one script call per batch of ended attempts)
      -> slot free -> claim again
    idle: a wait for a wake-up (claims.Waker) or the next due time, never a polling loop
    supervisor: one heartbeat for every lease; timeouts, cancels, shutdown grace
    maintenance: due retries promoted, lost runs reaped

SIGTERM (or SIGINT): no more claims; runs in flight get `shutdown_grace_s` to
finish, then are stopped and go back to their queue without spending a retry.

A run asked to stop whose code does not stop within `stuck_grace_s` (a thread in a
C call) is ended without it: its outcome is written, its slot goes to the next run
(the thread pool starts another thread) and its thread is abandoned, its late result
dropped. Past `max_abandoned_threads` the worker restarts itself (`restart`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType

from .. import keys, sync, tracing
from ..broker import Broker, Outage
from ..errors import RunInterrupted
from ..processor import Processor, advertise
from ..record import RunRecord
from ..settings import POOLS
from . import attempt
from .attempt import Outcome
from .claims import Claimer, Waker, budgets
from .finisher import Finisher
from .leases import Supervisor
from .maintenance import Maintenance
from .pools import EventLoop, Threads
from .processes import Children
from .registration import Registration
from .scheduler import Scheduler
from .slot import Slot, raise_in_thread

log = logging.getLogger("taskq.worker")

# An idle worker waits at most this long without a wake-up (a safety net: wake-ups,
# slots freed and due times end the wait sooner).
IDLE_WAIT_S = 5.0


class Engine:
    def __init__(
        self,
        broker: Broker,
        processors: dict[str, Processor],
        queues: list[str],
        *,
        concurrency: int,
        pool: str = "threads",
        max_runs_per_child: int = 0,
        name: str | None = None,
    ) -> None:
        if pool not in POOLS:
            raise ValueError(f"pool is one of {', '.join(POOLS)}, not {pool!r}")
        self.broker = broker
        self.processors = processors
        self.queues = queues
        self.concurrency = max(1, concurrency)
        self.pool = pool
        self.max_runs_per_child = max_runs_per_child
        self.name = name or uuid.uuid4().hex
        self.slots: dict[str, Slot] = {}
        self._lock = threading.Lock()
        self._wake = sync.Event()  # set by the SIGTERM handler too
        self._stopping = False
        self._stop_requested_at: float | None = None
        self.abandoned = 0  # attempts ended without their code, whose code still runs
        self.abandoned_total = 0
        self.restart = False  # set when too many are abandoned: the caller starts afresh
        # The processors of its queues are the ones it serves: it only ever claims theirs.
        self.served = [p for p in processors.values() if p.queue in queues]
        self.claimer = Claimer(broker, self.served, f"{self.name}:{uuid.uuid4().hex[:8]}")
        self.threads = Threads()
        self.loop = EventLoop()
        self.children: Children | None = None
        self.registration: Registration | None = None
        self.supervisor = Supervisor(broker, self._in_flight, self._beat, self._abandon)
        self._reserved = 0  # slots promised to claims under way (reserve)
        self.finisher = Finisher(broker, self._release, self)
        self.maintenance = Maintenance(broker)
        self.waker = Waker(broker, [p.name for p in self.served], self.claimer, self._wake)
        scheduled = [p for p in self.served if p.schedule is not None] if broker.settings.schedules else []
        self.scheduler = Scheduler(broker, scheduled) if scheduled else None
        self._claims = Outage(log, "taking runs")

    # -- the loop ---------------------------------------------------------

    def work(self, *, burst: bool = False, register: bool = True, handle_signals: bool = True) -> None:
        """Serves runs until asked to stop (or, with `burst`, until there is no run
        queued, in flight or waiting for a retry). `register`: in RQ's list of
        workers; `handle_signals`: SIGTERM/SIGINT stop it (from the main thread)."""
        self._start(register, handle_signals)
        try:
            while not self._stopping:
                free = self.reserve()
                if free <= 0:
                    self._wait(1.0)
                    continue
                records = self._claim(free)
                self._start_all(records, free)
                if len(records) >= free:
                    continue
                if burst and not records and not self.slots and not self._work_left():
                    break
                self._wait(0.05 if burst else self.claimer.next_wake_s(IDLE_WAIT_S))
        finally:
            self._finish()

    def request_shutdown(self) -> None:
        """Stop taking runs; give those in flight the grace period. A second request
        ends the grace period now."""
        grace = self.broker.settings.shutdown_grace_s
        if self._stopping:
            grace = 0
        else:
            log.info("shutting down: %d run(s) in flight get %g s to finish", len(self.slots), grace)
        self._stopping = True
        self._stop_requested_at = self._stop_requested_at or time.monotonic()
        if self.children is not None:
            self.children.drain()
        self.supervisor.shutdown_after(grace)
        self._wake.set()

    def reserve(self, freeing: int = 0) -> int:
        """Reserves every slot free once `freeing` more are (the finisher's batch), for
        a claim under way; none while stopping. `started` ends the reservation."""
        with self._lock:
            if self._stopping:
                return 0
            free = max(0, self.concurrency - len(self.slots) + freeing - self._reserved)
            self._reserved += free
            return free

    def started(self, records: list[RunRecord], reserved: int) -> None:
        """Begins the runs a finish took, in the slots reserved for it; slots it left
        free wake the loop, which may find runs elsewhere."""
        self._start_all(records, reserved)
        if len(records) < reserved:
            self._wake.set()

    def _start_all(self, records: list[RunRecord], reserved: int) -> None:
        for record in records:
            self._begin(record)
        with self._lock:
            self._reserved -= reserved

    def _wait(self, timeout_s: float) -> None:
        self._wake.wait_and_clear(timeout_s)

    def _claim(self, count: int) -> list[RunRecord]:
        try:
            records = self.claimer.claim(count)
        except Exception as exc:  # nothing was taken (the claim is one step)
            self._claims.failed(exc)
            self._wait(1.0)
            return []
        self._claims.ok()
        return records

    def _work_left(self) -> bool:
        """Whether a run waits in a lane or for a retry, in any partition."""
        pipe = self.broker.redis.pipeline(transaction=False)
        for partition in range(self.broker.partitions):
            pipe.hvals(keys.depth(partition))
            pipe.zcard(keys.delayed(partition))
        replies = pipe.execute()
        return any(int(n) > 0 for depths in replies[::2] for n in depths) or any(replies[1::2])

    # -- one run ----------------------------------------------------------

    def _begin(self, record: RunRecord) -> None:
        proc = self.processors.get(record.processor)
        slot = Slot(record, proc, record.timeout_s)
        slot.span = tracing.start_attempt(record)
        with self._lock:
            self.slots[record.id] = slot
        self.supervisor.changed()
        if proc is None:  # never claimed (a claim names the processors served): back, no retry spent
            log.error("run %s: processor %r is not served here; put back", record.id, record.processor)
            self._done(slot, Outcome("shutdown"))
        elif attempt.is_async(proc):
            self.loop.submit(self._run_async(slot, proc))
        elif self.children is not None:
            children = self.children
            self.threads.submit(lambda: self._guarded(slot, lambda: children.run(slot)))
        else:
            self.threads.submit(lambda: self._run_thread(slot, proc))

    def _guarded(self, slot: Slot, run: Callable[[], Outcome]) -> None:
        """Every slot ends with an outcome, even if the engine's own code fails (else
        its lease would be renewed for ever and its slot never freed)."""
        try:
            outcome = run()
        except BaseException as exc:
            log.exception("run %s: the attempt failed outside the processor", slot.run_id)
            outcome = attempt.failed(slot.record, exc, retryable=True)
        self._done(slot, outcome)

    def _run_thread(self, slot: Slot, proc: Processor) -> None:
        self._guarded(slot, lambda: self._call_in_thread(slot, proc))

    def _call_in_thread(self, slot: Slot, proc: Processor) -> Outcome:
        thread_id = threading.get_ident()
        try:
            with tracing.within(slot.span):
                outcome = attempt.call_sync(
                    proc,
                    slot.record,
                    self.broker,
                    arm=lambda: slot.arm(lambda: raise_in_thread(thread_id), lambda: raise_in_thread(thread_id, None)),
                    disarm=slot.disarm,
                )
        except RunInterrupted:
            slot.disarm()
            outcome = attempt.interrupted(slot.record, slot.reason or "shutdown", slot.timeout_s)
        return outcome

    async def _run_async(self, slot: Slot, proc: Processor) -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None

        def cancel() -> None:
            loop.call_soon_threadsafe(task.cancel)

        slot.arm(cancel)
        try:
            with tracing.within(slot.span):
                outcome = await attempt.call_async(proc, slot.record, self.broker)
        except (asyncio.CancelledError, RunInterrupted):
            outcome = attempt.interrupted(slot.record, slot.reason or "shutdown", slot.timeout_s)
        except Exception as exc:
            log.exception("run %s: the attempt failed outside the processor", slot.run_id)
            outcome = attempt.failed(slot.record, exc, retryable=True)
        finally:
            slot.disarm()
        self._done(slot, outcome)

    def _done(self, slot: Slot, outcome: Outcome) -> None:
        if slot.end():
            tracing.end_attempt(slot.span, outcome.what, outcome.error)
            self.finisher.put(slot, outcome)
            return
        with self._lock:
            self.abandoned -= 1
        log.info("run %s: its abandoned code returned at last; its result is dropped", slot.run_id)

    def _abandon(self, slot: Slot) -> None:
        """Ends an attempt whose code did not stop when asked: its outcome is written
        now, as if it had stopped, and its slot freed; the code runs on, abandoned."""
        if not slot.end(abandon=True):
            return
        outcome = attempt.interrupted(slot.record, slot.reason or "shutdown", slot.timeout_s)
        tracing.end_attempt(slot.span, outcome.what, outcome.error)
        limit = self.broker.settings.max_abandoned_threads
        with self._lock:
            self.abandoned += 1
            self.abandoned_total += 1
            too_many = bool(limit) and self.abandoned > limit
        log.warning(
            "run %s: did not stop within %g s of being asked (%s); ended without it, its thread abandoned",
            slot.run_id,
            self.broker.settings.stuck_grace_s,
            slot.reason,
        )
        self.finisher.put(slot, outcome)
        if too_many and not self._stopping:
            log.warning("%d abandoned threads, more than %d: restarting this worker", self.abandoned, limit)
            self.restart = True
            self.request_shutdown()

    def _release(self, slots: list[Slot]) -> None:
        with self._lock:
            for slot in slots:
                if self.slots.get(slot.run_id) is slot:
                    del self.slots[slot.run_id]
        self._wake.set()

    def _in_flight(self) -> list[Slot]:
        with self._lock:
            return list(self.slots.values())

    def _beat(self) -> None:
        if self.registration is not None:
            self.registration.beat(len(self.slots), self.abandoned)

    # -- start and end ----------------------------------------------------

    def _start(self, register: bool, handle_signals: bool) -> None:
        if handle_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        settings = self.broker.settings
        advertise(self.broker.redis, self.processors.values(), settings)
        if register:
            self.registration = Registration(
                self.broker,
                self.name,
                self.queues,
                [p.name for p in self.served],
                self.concurrency,
                self.pool,
                budgets(self.served, settings.tenant_concurrency),
            )
            self.registration.birth()
        if self.pool == "processes":
            self.children = Children(self.concurrency, settings, self.max_runs_per_child)
            self.children.wait_ready()
        for thread in (self.supervisor, self.finisher, self.maintenance, self.waker, self.scheduler):
            if thread is not None:
                thread.start()
        self.waker.ready.wait(5)  # subscribed before the first claim: no wake-up is missed
        log.info(
            "worker %s: %s pool, concurrency %d, queues %s",
            self.name,
            self.pool,
            self.concurrency,
            ", ".join(self.queues),
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_shutdown()

    def _finish(self) -> None:
        self._stopping = True
        settings = self.broker.settings
        if self.slots:
            # The supervisor stops what is left when the grace is over, and abandons
            # what does not stop (a thread in a C call): it goes back to the queue.
            grace_s = max(0.0, settings.shutdown_grace_s - self._since_stop())
            self.supervisor.shutdown_after(grace_s)
            deadline = time.monotonic() + grace_s + settings.stuck_grace_s + 1.0
            while self.slots and time.monotonic() < deadline:
                self._wait(0.1)
        for slot in self._in_flight():  # the supervisor itself failed: the same, here
            slot.interrupt("shutdown")
            self._abandon(slot)
        self.finisher.close()
        self.supervisor.stop()
        self.maintenance.stopped.set()
        self.waker.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        self.threads.close()
        self.loop.close()
        if self.children is not None:
            self.children.close()
        if self.registration is not None:
            self.registration.death()
        log.info("worker %s stopped", self.name)

    def _since_stop(self) -> float:
        return 0.0 if self._stop_requested_at is None else time.monotonic() - self._stop_requested_at
