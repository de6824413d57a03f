"""One attempt of one run, inside the RQ job that carries it: claim the run, keep
its lease, call the processor, and end the attempt in one atomic step.

The RQ job always succeeds from RQ's point of view: retries, timeouts and failures
are taskq's, recorded on the run, so there is one account of what happened.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
import traceback
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Any

import redis
from pydantic import ValidationError
from rq.exceptions import ShutDownImminentException
from rq.job import get_current_job
from rq.timeouts import JobTimeoutException

from . import catalog, keys
from .broker import Broker, now_ms
from .errors import RunInterrupted, TaskqError
from .processor import REGISTRY, OutputInvalid, Processor

log = logging.getLogger("taskq.worker")

INTERRUPT_SIGNAL = signal.SIGUSR1
PROGRESS_MAXLEN = 1000

_broker: Broker | None = None
_worker_name = "worker"
_shutdown_requested_ms: int | None = None
_active: Attempt | None = None
_current: ContextVar[CurrentRun | None] = ContextVar("taskq_current_run", default=None)


def configure(broker: Broker, worker_name: str) -> None:
    """Called by the worker before it takes jobs: the broker attempts use."""
    global _broker, _worker_name
    _broker = broker
    _worker_name = worker_name
    # Installed once, for good: a per-attempt handler restored to the default at the
    # end of an attempt could meet a late signal from its lease thread and kill the
    # process. Outside an armed attempt, the signal is ignored.
    signal.signal(INTERRUPT_SIGNAL, _on_interrupt)


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    attempt = _active
    if attempt is not None and attempt.lease.armed:
        raise RunInterrupted(attempt.lease.reason or "interrupted")


def execute() -> None:
    """The function of every taskq RQ job; the job id is `{run_id}-{push}`."""
    job = get_current_job()
    if job is None or _broker is None:
        raise RuntimeError("taskq.execution.execute runs only inside a taskq worker")
    Attempt(_broker, job.id, job.origin, worker_name=_worker_name).run()


def request_shutdown() -> None:
    """The worker is going away: the current attempt gets the grace period to finish."""
    global _shutdown_requested_ms
    if _shutdown_requested_ms is None:
        _shutdown_requested_ms = now_ms()
    if _active is not None:
        _active.lease.shutdown_after(_broker.settings.shutdown_grace_s if _broker else 0)


@dataclass
class CurrentRun:
    """What a processor knows of the run it is serving (`current_run()`)."""

    run_id: str
    attempt: int
    _broker: Broker

    def progress(self, message: str) -> None:
        """Adds a progress message to the run's event stream."""
        self._broker.redis.xadd(
            keys.run_events(self.run_id),
            {"type": "task_run.progress", "message": str(message)[:2000], "ts": now_ms()},
            maxlen=PROGRESS_MAXLEN,
            approximate=True,
        )


def current_run() -> CurrentRun:
    run = _current.get()
    if run is None:
        raise RuntimeError("current_run() is only available inside a running processor")
    return run


class Lease(threading.Thread):
    """Renews the attempt's lease every `heartbeat_s`. Stops the processor (by raising
    RunInterrupted in the thread running it) when the run is cancelled, when another
    worker holds the run, or when a requested shutdown's grace period is over."""

    def __init__(self, broker: Broker, run_id: str, token: str) -> None:
        super().__init__(name=f"lease-{run_id}", daemon=True)
        self.broker = broker
        self.run_id = run_id
        self.token = token
        self.reason: str | None = None
        self.armed = True
        self._stop_event = threading.Event()
        self._shutdown_at: float | None = None

    def shutdown_after(self, grace_s: float) -> None:
        if self._shutdown_at is None:
            self._shutdown_at = time.monotonic() + grace_s
            self._stop_event.set()  # wake up to re-plan the next check

    def stop(self) -> None:
        self.armed = False
        self._shutdown_at = None
        self._stop_event.set()

    def run(self) -> None:
        settings = self.broker.settings
        next_beat = time.monotonic() + settings.heartbeat_s
        while self.armed:
            wake = min(next_beat, self._shutdown_at or next_beat)
            if self._stop_event.wait(max(0.0, wake - time.monotonic())):
                self._stop_event.clear()
                continue
            if not self.armed:
                return
            if self._shutdown_at is not None and time.monotonic() >= self._shutdown_at:
                return self._interrupt("shutdown")
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + settings.heartbeat_s
                try:
                    state = self.broker.scripts.heartbeat(
                        args=[self.run_id, self.token, now_ms() + int(settings.lease_s * 1000)]
                    )
                except Exception:  # Redis away: keep trying; the lease says how long we may
                    log.warning("heartbeat for %s failed", self.run_id, exc_info=True)
                    continue
                if state == "cancelling":
                    return self._interrupt("cancelled")
                if state == "lost":
                    return self._interrupt("lost")

    def _interrupt(self, reason: str) -> None:
        if self.armed:
            self.reason = reason
            os.kill(os.getpid(), INTERRUPT_SIGNAL)


class Attempt:
    def __init__(self, broker: Broker, job_id: str, queue: str, worker_name: str) -> None:
        self.broker = broker
        self.job_id = job_id
        self.queue = queue
        self.run_id = job_id.partition("-")[0]
        self.token = f"{worker_name}:{uuid.uuid4().hex[:12]}"
        self.lease = Lease(broker, self.run_id, self.token)
        self.record: dict[str, str] = {}

    def run(self) -> None:
        global _active
        settings = self.broker.settings
        reply = self._claim()
        if not reply:
            log.info("run %s is not queued any more; skipped", self.run_id)
            return
        self.record = dict(zip(reply[::2], reply[1::2]))
        _active = self
        self.lease.start()
        if _shutdown_requested_ms is not None:
            self.lease.shutdown_after(settings.shutdown_grace_s - (now_ms() - _shutdown_requested_ms) / 1000)
        try:
            self._perform()
        finally:
            self.lease.stop()
            _active = None

    def _claim(self) -> list[str]:
        """Claims the run, riding out a Redis blip: the RQ job is already off its queue,
        so a claim never made would leave the run queued with nothing to carry it."""
        settings = self.broker.settings
        for wait_s in (0.1, 0.5, 1, 2, 4, 8, 15, 30):
            try:
                now = now_ms()
                return list(self.broker.scripts.claim(
                    args=[
                        self.run_id, self.token, now, now + int(settings.lease_s * 1000), settings.retention_s,
                        keys.rq_intermediate(self.queue), self.job_id,
                    ]  # fmt: skip
                ))
            except (redis.ConnectionError, redis.TimeoutError):
                log.warning("claim of %s failed (Redis unreachable); retrying in %g s", self.run_id, wait_s)
                time.sleep(wait_s)
        raise RuntimeError(f"could not claim {self.run_id}: Redis unreachable for a minute")

    def _perform(self) -> None:
        proc = REGISTRY.get(self.record["processor"])
        if proc is None:
            return self._hand_back()
        attempt = int(self.record.get("attempts", 1))
        context = _current.set(CurrentRun(self.run_id, attempt, self.broker))
        try:
            try:
                value = proc(proc.parse_input(json.loads(self.record["input"])))
            finally:
                self.lease.armed = False
                _current.reset(context)
            kind, content = proc.shape_output(value)
            if self.record.get("output_schema") and kind == "json":
                try:
                    catalog.check(content, json.loads(self.record["output_schema"]), "output")
                except TaskqError as exc:
                    raise OutputInvalid(f"output does not match the task's output_schema: {exc.message}") from exc
            output = json.dumps(content)
            if len(output) > self.broker.settings.max_output_bytes:
                raise OutputInvalid(
                    f"output is {len(output)} bytes, over the limit of {self.broker.settings.max_output_bytes}"
                )
            self._finish("completed", output_type=kind, output=output)
        except (RunInterrupted, ShutDownImminentException) as exc:
            self._interrupted(getattr(exc, "reason", "shutdown"))
        except Exception as exc:
            self._failed(proc, exc)

    def _hand_back(self) -> None:
        """A worker that does not serve the run's processor (an older deploy sharing
        the queue) puts it back for one that does, with a growing delay, without
        using up a retry."""
        settings = self.broker.settings
        handed = int(self.record.get("interruptions") or 0) + 1
        delay_s = min(settings.retry_backoff_cap_s, settings.retry_backoff_base_s * 2 ** (handed - 1))
        log.warning("run %s: processor %r is not served here; handed back", self.run_id, self.record["processor"])
        self._finish("queued", due=now_ms() + int(delay_s * 1000), interrupted=True)

    def _interrupted(self, reason: str) -> None:
        if reason == "cancelled":
            self._finish("cancelled")
        elif reason == "shutdown":
            log.info("run %s interrupted by shutdown; back on the queue", self.run_id)
            self._finish("queued", due=now_ms(), interrupted=True)
        else:
            log.warning("run %s: lease lost to another worker; this attempt's result is dropped", self.run_id)

    def _failed(self, proc: Processor, exc: Exception) -> None:
        settings = self.broker.settings
        timeout_s = int(self.record.get("timeout_s") or settings.default_timeout_s)
        attempts = int(self.record.get("attempts", 1))
        if isinstance(exc, JobTimeoutException):
            message = f"timed out after {timeout_s} s"
        else:
            message = f"{type(exc).__name__}: {exc}"
        error = {
            "ref_id": f"{self.run_id}.{attempts}",
            "message": message[:2000],
            "detail": {"attempt": attempts, "type": type(exc).__name__, "traceback": _tail(exc)},
        }
        failures = attempts - int(self.record.get("interruptions") or 0)
        retryable = _retryable(proc, exc)
        if retryable and failures <= int(self.record.get("max_retries") or 0):
            delay_s = min(settings.retry_backoff_cap_s, settings.retry_backoff_base_s * 2 ** (failures - 1))
            due = now_ms() + int(delay_s * random.uniform(0.5, 1.0) * 1000)
            log.info("run %s attempt %d failed (%s); retry at +%d ms", self.run_id, attempts, message, due - now_ms())
            self._finish("queued", due=due, error=error)
        else:
            log.info("run %s failed after %d attempt(s): %s", self.run_id, attempts, message)
            self._finish("failed", error=error)

    def _finish(
        self, status: str, *, due: int = 0, error: dict[str, Any] | None = None, interrupted: bool = False, **fields: str
    ) -> None:
        settings = self.broker.settings
        args: list[Any] = [
            self.run_id, self.token, now_ms(), status, due, settings.retention_s,
            json.dumps(error) if error else "", "1" if interrupted else "",
        ]  # fmt: skip
        for name, value in fields.items():
            args += [name, value]
        if not self.broker.scripts.finish(args=args):
            log.warning("run %s: attempt ended after its lease was lost; result dropped", self.run_id)


def _retryable(proc: Processor, exc: Exception) -> bool:
    if isinstance(exc, OutputInvalid | ValidationError):
        return False
    return isinstance(exc, JobTimeoutException) or proc.is_retryable(exc)


def _tail(exc: BaseException, limit: int = 4000) -> str:
    return "".join(traceback.format_exception(exc))[-limit:]
