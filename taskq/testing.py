"""Helpers for testing code built on taskq, in one process, against a real Redis:
run every queued run to its end (`drain`), deliver every due webhook (`deliver`),
and wait for a condition (`wait_until`). taskq's own tests use them as fixtures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .broker import Broker
from .webhooks.dispatcher import Dispatcher
from .worker import build


class NotInTime(AssertionError):
    """What `wait_until` raises when its condition does not hold in time."""


def wait_until(
    predicate: Callable[[], object], timeout_s: float = 10, interval_s: float = 0.02, what: str = ""
) -> object:
    """Polls `predicate` until it is truthy and returns its value; NotInTime after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise NotInTime(f"{what or 'condition'} not met within {timeout_s} s")
        time.sleep(interval_s)


def drain(broker: Broker, concurrency: int = 8, timeout_s: float = 60) -> None:
    """Runs every queued run to its end in this process (threads, no subprocess, not
    registered, no signal handlers), and returns when nothing is queued, running or
    waiting for a retry, as arq's burst worker and huey's `execute_next()` do. A run
    still going after `timeout_s` is stopped, so a hung run fails the test, not the suite."""
    engine = build(broker, concurrency=concurrency, pool="threads")
    done = threading.Event()

    def stop_late() -> None:
        if not done.wait(timeout_s):
            engine.request_shutdown()

    threading.Thread(target=stop_late, daemon=True).start()
    try:
        engine.work(burst=True, register=False, handle_signals=False)
    finally:
        done.set()
    assert not engine.slots


def deliver(broker: Broker, until: Callable[[], object] | None = None, timeout_s: float = 20) -> None:
    """Delivers webhooks in this process: what is due now, then, while `until()` does
    not hold, what comes due next (retries on their schedule)."""
    dispatcher = Dispatcher(broker)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            sent, next_in_ms = dispatcher.step()
            if until is None and not sent:
                return
            if until is not None and until():
                return
            if time.monotonic() > deadline:
                raise NotInTime(f"webhooks: condition not met within {timeout_s} s")
            if not sent:
                time.sleep(min(0.05, (next_in_ms or 50) / 1000))
    finally:
        dispatcher.close()
