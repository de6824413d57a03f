"""The `processes` pool: pre-forked child processes, each running one run at a
time and reused for the next (never a fork per run), recycled after
`max_runs_per_child` runs. For CPU-bound code (no shared GIL) and code that leaks
or may crash: a timeout or a cancel kills that run's child at once, and a new
child takes its place.

Children are started with multiprocessing's `spawn` (a fresh interpreter that
imports TASKQ_APP), not `fork`: the worker has threads, and forking a threaded
process can copy a lock held by another thread."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from .. import tracing
from ..broker import Broker
from ..errors import ChildDied
from ..processor import REGISTRY, load_apps
from ..record import RunRecord
from ..settings import Settings
from . import attempt
from .attempt import Outcome
from .slot import Slot

log = logging.getLogger("taskq.worker")


class Child:
    def __init__(self, settings: Settings) -> None:
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(theirs, settings), name="taskq-child", daemon=True)
        self.proc.start()
        theirs.close()
        self.conn: Connection = mine
        self.runs = 0
        self.ready = False

    def wait_ready(self) -> None:
        """Waits until the child has imported the app and connected (it says so)."""
        if not self.ready:
            try:
                self.conn.recv()
            except (EOFError, OSError) as exc:
                raise ChildDied(f"child {self.proc.pid} exited while starting") from exc
            self.ready = True

    def call(self, raw: dict[str, str]) -> Outcome:
        self.wait_ready()
        try:
            self.conn.send(raw)
            outcome: Outcome = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ChildDied(f"child {self.proc.pid} exited") from exc
        self.runs += 1
        return outcome

    def kill(self) -> None:
        if self.proc.pid is not None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def ask_to_exit(self) -> None:
        try:
            self.conn.send(None)
        except OSError:  # already gone
            pass

    def stop(self) -> None:
        self.ask_to_exit()
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()
            self.proc.join(2)
        self.conn.close()


class Children:
    """`size` children; a run takes a free one for its whole attempt."""

    def __init__(self, size: int, settings: Settings, max_runs_per_child: int) -> None:
        self.settings = settings
        self.max_runs = max_runs_per_child
        self._free: queue.SimpleQueue[Child] = queue.SimpleQueue()
        self._all: set[Child] = set()
        self._lock = threading.Lock()
        self._draining = False  # the worker is stopping: a child that ends is not replaced
        for _ in range(size):
            self._start()

    def wait_ready(self) -> None:
        """Waits until every child has started (so no claimed run waits for one)."""
        with self._lock:
            children = list(self._all)
        for child in children:
            try:
                child.wait_ready()
            except ChildDied:
                log.warning("a child process exited while starting", exc_info=True)

    def drain(self) -> None:
        """No more runs will come: children that end are not replaced (a stopping
        worker has no use for a fresh interpreter it would only have to kill).
        Lock-free (one assignment), so a signal handler may call it."""
        self._draining = True

    def _start(self) -> None:
        with self._lock:
            if self._draining:
                return
        child = Child(self.settings)
        with self._lock:
            if not self._draining:
                self._all.add(child)
                self._free.put(child)
                return
        child.kill()  # closed while it was starting: every child is either in _all or gone
        child.stop()

    def _replace(self, child: Child) -> None:
        with self._lock:
            self._all.discard(child)
        threading.Thread(target=child.stop, daemon=True).start()
        self._start()

    def run(self, slot: Slot) -> Outcome:
        """Runs the slot's attempt in a free child; called from a thread of the
        engine, which waits here for the outcome."""
        child = self._free.get()
        slot.arm(child.kill)
        try:
            outcome = child.call(_with_trace(slot))
        except ChildDied:
            slot.disarm()
            self._replace(child)
            if slot.reason is not None:
                return attempt.interrupted(slot.record, slot.reason, slot.timeout_s)
            log.warning("run %s: the child process running it exited", slot.run_id)
            return attempt.failed(slot.record, None, retryable=True, message="the worker process running it exited")
        slot.disarm()
        if slot.reason is not None:  # stopped just as it ended: the stop counts
            self._replace(child)
            return attempt.interrupted(slot.record, slot.reason, slot.timeout_s)
        if self.max_runs and child.runs >= self.max_runs:
            self._replace(child)
        else:
            self._free.put(child)
        return outcome

    def close(self, timeout_s: float = 2.0) -> None:
        """Stops every child at once: each is asked to exit, and those still there
        after `timeout_s` (busy, or still starting) are killed. No child outlives
        the worker (multiprocessing's exit handler would wait for it for ever: a
        child ignores SIGTERM)."""
        self.drain()
        with self._lock:
            children = list(self._all)
            self._all.clear()
        for child in children:
            child.ask_to_exit()
        deadline = time.monotonic() + timeout_s
        for child in children:
            child.proc.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.proc.is_alive():
                child.kill()
                child.proc.join(2)
            child.conn.close()


def _with_trace(slot: Slot) -> dict[str, str]:
    """The run's fields for the child, whose processor's spans are children of the
    attempt's (made here, in the engine)."""
    raw = dict(slot.record.raw)
    if (parent := tracing.traceparent(slot.span)) is not None:
        raw["traceparent"] = parent
    return raw


def child_main(conn: Connection, settings: Settings) -> None:
    """A child's life: run what the parent sends, one at a time, until told to stop
    or the parent is gone (the pipe closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when runs stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    load_apps(settings.app)
    broker = Broker(settings)
    conn.send("ready")
    while True:
        try:
            raw: Any = conn.recv()
        except (EOFError, OSError):
            return
        if raw is None:
            return
        conn.send(_run(broker, RunRecord.from_hash(raw)))


def _run(broker: Broker, record: RunRecord) -> Outcome:
    proc = REGISTRY[record.processor]
    with tracing.continued(record.get("traceparent")):
        if attempt.is_async(proc):
            return asyncio.run(attempt.call_async(proc, record, broker))
        return attempt.call_sync(proc, record, broker, arm=lambda: None, disarm=lambda: None)
