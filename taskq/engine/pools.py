"""Where runs execute in the worker process: a pool of threads for plain
processors, one event loop for `async def` ones. Both are bounded by the engine,
which never has more runs in flight than its concurrency."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("taskq.worker")


class Threads:
    """Daemon threads, started as needed, kept for the next runs: as many as there
    have been runs at once, at most the concurrency. (Daemon threads, so a run stuck
    in a C call cannot keep a stopping worker alive.)"""

    def __init__(self, name: str = "taskq-run") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._busy = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._busy += 1
            if self._busy > self._threads:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"{self._name}-{self._threads}", daemon=True).start()
        self._jobs.put(job)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException:  # a job reports its own outcome; this keeps the thread
                log.exception("a run's thread ended with an error outside the run")
            finally:
                with self._lock:
                    self._busy -= 1

    def close(self) -> None:
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._jobs.put(None)

    @property
    def size(self) -> int:
        return self._threads


class EventLoop:
    """One asyncio loop in its own thread, started on first use, for `async def`
    processors: many runs at once on one thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="taskq-asyncio", daemon=True)
                self._thread.start()
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
