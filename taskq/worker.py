"""`taskq worker`: RQ workers that serve taskq runs.

Two classes, as in RQ: `fork` (a work horse per run, the default: a crash or a leak
in a processor cannot take the worker down) and `simple` (runs in the worker's own
process: faster, for trusted code). Beside RQ's loop, each worker

- advertises the processors it serves, so the gateway can check requests;
- runs a maintenance thread that puts retries whose backoff is over back on their
  queue, reaps runs whose lease ran out (a worker killed with SIGKILL, a lost
  machine) and rescues runs whose worker died between dequeuing and claiming them,
  every `reaper_interval_s` rather than in RQ's 10-minute maintenance;
- on SIGTERM, stops taking runs and gives the current one `shutdown_grace_s` to
  finish before putting it back on the queue.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from types import FrameType
from typing import cast

import rq
from rq.executions import Execution
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.utils import now as rq_utils_now
from rq.worker import WorkerStatus

from . import execution
from .broker import Broker, now_ms, rq_job_data, rq_now
from .processor import Processor, advertise, load_apps

log = logging.getLogger("taskq.worker")

BATCH = 500
WORKER_BEAT_S = 10


class Maintenance(threading.Thread):
    """Promotes due retries and reaps lost runs, until stopped."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(name="taskq-maintenance", daemon=True)
        self.broker = broker
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.broker.settings.reaper_interval_s):
            try:
                self.tick()
            except Exception:  # Redis away for a moment: try again next round
                log.warning("maintenance round failed", exc_info=True)

    def tick(self) -> None:
        scripts, settings = self.broker.scripts, self.broker.settings
        reaped = scripts.reap(args=[now_ms(), BATCH, settings.retention_s])
        if reaped:
            log.warning("reaped %d run(s) whose worker was lost: %s", len(reaped), ", ".join(reaped[:10]))
        rescued = scripts.rescue(args=[now_ms(), int(2 * settings.lease_s * 1000)])
        if rescued:
            log.warning("put back %d run(s) whose worker died as it took them: %s", len(rescued), ", ".join(rescued[:10]))
        scripts.promote(args=[now_ms(), rq_now(), rq_job_data(), BATCH])


class TaskqWorkerMixin:
    """What taskq adds to an RQ worker class; `broker` and `processors` are set by
    `build()`."""

    broker: Broker
    processors: dict[str, Processor]
    _maintenance: Maintenance | None = None

    def perform_job(self, job: Job, queue: rq.Queue, execution: Execution) -> bool:
        """Runs the attempt the RQ job carries, then forgets the job.

        taskq keeps a run's whole account itself (status, lease, retries, result), so
        RQ's per-job bookkeeping (started and finished registries, job status, result,
        `Job.delete()`'s reads) would be written only to be erased: this replaces it.
        RQ's loop, dequeue, work horse, death penalty and worker registry stay RQ's.
        """
        worker = cast(rq.worker.BaseWorker, self)
        try:
            timeout = job.timeout or rq.Queue.DEFAULT_TIMEOUT
            with worker.death_penalty_class(timeout, JobTimeoutException, job_id=job.id):
                job.perform()
        except Exception:
            # Only taskq's own Redis calls can get here (the processor's errors are the
            # attempt's to record): a claimed run whose end could not be written keeps
            # its lease and is reaped and retried like one whose worker died.
            log.exception("attempt for %s ended with an error outside the processor", job.id)
        finally:
            worker.executions.pop(execution.id, None)
            # On the broker's client, which the attempt has just used: a work horse
            # then opens one connection to Redis, not two. (The claim took the job
            # out of RQ's intermediate list already.)
            self.broker.redis.delete(job.key)
        return True

    def prepare_execution(self, job: Job) -> Execution:
        """An execution kept in memory only: the run's lease in `taskq:running` already
        says that it is being worked on and by whom."""
        worker = cast(rq.worker.BaseWorker, self)
        execution = Execution(uuid.uuid4().hex, job.id, connection=worker.connection, worker_name=worker.name)
        worker.executions[execution.id] = execution
        worker.set_state(WorkerStatus.BUSY)
        return execution

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        cast(rq.worker.BaseWorker, self).heartbeat(cast(rq.Worker, self).job_monitoring_interval + 60)

    def set_state(self, state: str, pipeline: object = None) -> None:
        # RQ sets `idle` both after a job and again before each dequeue.
        worker = cast(rq.worker.BaseWorker, self)
        if pipeline is None and state == worker.get_state():
            return
        super().set_state(state, pipeline)  # type: ignore[misc]

    def heartbeat(self, timeout: int | None = None, pipeline: object = None) -> None:
        # RQ beats before and after every dequeue, for a key that lives worker_ttl
        # (420 s): one beat every WORKER_BEAT_S says as much, 6 commands a run fewer.
        last = cast(rq.worker.BaseWorker, self).last_heartbeat
        if timeout is None and pipeline is None and last and (rq_utils_now() - last).total_seconds() < WORKER_BEAT_S:
            return
        super().heartbeat(timeout, pipeline)  # type: ignore[misc]

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[misc]
        execution.configure(self.broker, cast(rq.worker.BaseWorker, self).name)
        settings = self.broker.settings
        advertise(
            self.broker.redis,
            self.processors.values(),
            {"retries": settings.default_retries, "timeout_s": settings.default_timeout_s},
        )
        self._maintenance = Maintenance(self.broker)
        self._maintenance.start()

    def register_death(self) -> None:
        if self._maintenance is not None:
            self._maintenance.stopped.set()
        super().register_death()  # type: ignore[misc]


class ForkWorker(TaskqWorkerMixin, rq.Worker):
    def setup_work_horse_signals(self) -> None:
        # The horse leaves SIGINT/SIGTERM to its parent, which passes a shutdown on
        # as SIGRTMIN; the run then gets its grace period (see execution.Lease).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGRTMIN, _shutdown_signal)

    def handle_warm_shutdown_request(self) -> None:
        if self.horse_pid and self.get_state() == WorkerStatus.BUSY:
            self.kill_horse(sig=signal.SIGRTMIN)


class SimpleWorker(TaskqWorkerMixin, rq.SimpleWorker):
    def handle_warm_shutdown_request(self) -> None:
        execution.request_shutdown()


WORKER_CLASSES: dict[str, type[TaskqWorkerMixin]] = {"fork": ForkWorker, "simple": SimpleWorker}


def _shutdown_signal(signum: int, frame: FrameType | None) -> None:
    execution.request_shutdown()


def build(
    broker: Broker,
    *,
    worker_class: str = "fork",
    queues: list[str] | None = None,
    name: str | None = None,
) -> rq.worker.BaseWorker:
    """A worker serving the processors of TASKQ_APP (and the built-in ones)."""
    processors = load_apps(broker.settings.app)
    queue_names = queues or sorted({p.queue for p in processors.values()})
    cls = WORKER_CLASSES[worker_class]
    connection = broker.rq_connection()
    worker = cls(  # type: ignore[call-arg]
        [rq.Queue(q, connection=connection) for q in queue_names], connection=connection, name=name
    )
    worker.broker = broker
    worker.processors = processors
    return worker  # type: ignore[return-value]
