"""An Event that a signal handler may set.

A Python signal handler runs in the main thread, between two of its bytecodes,
possibly while that thread is inside `threading.Event.wait()` or `.clear()`
holding the event's (non-reentrant) lock: the handler's `set()` then waits for
a lock its own thread holds, for ever, and the process never stops. This Event
is `threading.Event` on a reentrant lock, so the handler's `set()` goes through.
Use it for anything a SIGTERM handler sets."""

from __future__ import annotations

import threading


class Event:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._flag:
                self._cond.wait(timeout)
            return self._flag

    def wait_and_clear(self, timeout: float | None = None) -> bool:
        """`wait` then `clear` in one step: a `set` that comes between the two is
        never lost (the loop it wakes runs once more)."""
        with self._cond:
            if not self._flag:
                self._cond.wait(timeout)
            was, self._flag = self._flag, False
            return was
