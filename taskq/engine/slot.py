"""A slot: one attempt in flight, with what it takes to stop it.

Each pool arms the slot with its way of stopping a run (raise an exception in
its thread, cancel its asyncio task, kill its child process) while the processor
runs; `interrupt(reason)` stops that run and no other.

An attempt ends exactly once (`end`): when its code returns, or, if it was
interrupted and its code did not stop within the grace (a thread blocked in a C
call), when the engine abandons it. Whichever comes first is the end; the other
is told it came too late."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import RunInterrupted
from ..processor import Processor
from ..record import RunRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class Slot:
    def __init__(self, record: RunRecord, proc: Processor | None, timeout_s: int) -> None:
        self.record = record
        self.proc = proc
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.reason: str | None = None  # why it was interrupted, once it was
        self.interrupted_at: float | None = None  # monotonic, when it was
        self.abandoned = False  # ended by the engine while its code still runs
        self._ended = False
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None
        self._clear: Callable[[], None] | None = None
        self.span: Span | None = None  # its trace (tracing.py), when traces are on

    @property
    def run_id(self) -> str:
        return self.record.id

    @property
    def token(self) -> str:
        return self.record.token

    def arm(self, stop: Callable[[], None], clear: Callable[[], None] | None = None) -> None:
        """From now on `stop()` stops the run; `clear()` takes back a stop that has
        not landed yet (see disarm). A slot interrupted before it was armed is
        stopped at once."""
        with self._lock:
            self._stop, self._clear = stop, clear
            if self.reason is not None:
                stop()

    def disarm(self) -> None:
        """The processor is done: a stop sent but not yet delivered is taken back,
        so it cannot land in the engine's own code."""
        with self._lock:
            if self._stop is not None and self.reason is not None and self._clear is not None:
                self._clear()
            self._stop = self._clear = None

    def interrupt(self, reason: str) -> bool:
        """Stops the run for `reason` (cancelled, timeout, shutdown, lost); only the
        first reason counts. Returns whether this call sent the stop."""
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
            self.interrupted_at = time.monotonic()
            if self._stop is not None:
                self._stop()
                return True
            return False

    def end(self, *, abandon: bool = False) -> bool:
        """Ends the attempt, once: True for the first caller (its outcome is the
        one written), False for the other. `abandon`: the engine gives up waiting
        for the run's code, which may still return later."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            self.abandoned = abandon
            return True

    @property
    def ended(self) -> bool:
        return self._ended

    def stuck(self, now: float, grace_s: float) -> bool:
        """Interrupted more than `grace_s` ago and its code has not stopped."""
        return self.interrupted_at is not None and not self._ended and now - self.interrupted_at >= grace_s


def raise_in_thread(thread_id: int, exc: type[BaseException] | None = RunInterrupted) -> None:
    """Raises `exc` in the thread `thread_id` at its next bytecode (None clears a
    pending one), as dramatiq's time limits do. A thread blocked in a C call (a
    socket read, `time.sleep`) gets it only when the call returns: the engine then
    abandons the attempt (see Slot.end)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else ctypes.c_void_p(0)
    )
