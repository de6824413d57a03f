"""Runs from Python, without HTTP: `processor.put(...)` and the handle it returns."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import action, run, wire
from .broker import Broker
from .catalog import Catalog
from .context import _current
from .ids import tenant_of
from .jsontext import parse
from .models import RunInput, TaskRun, TaskRunResult
from .settings import Settings

# Specs of the processors this process has put runs of (they are known here without
# asking Redis, so a run can be put before any worker has advertised them).
_LOCAL_SPECS: dict[str, dict[str, Any]] = {}


@functools.cache
def _default_broker() -> Broker:
    return Broker.from_env()


@functools.cache
def _catalog(broker: Broker) -> Catalog:
    return Catalog(broker, _LOCAL_SPECS)


def default_tenant(broker: Broker) -> str:
    """Python puts belong to the tenant of the first TASKQ_API_KEYS key, so the
    runs are visible over HTTP with that key."""
    keys = broker.settings.api_keys
    return tenant_of(keys[0]) if keys else "local"


class RunHandle:
    def __init__(self, broker: Broker, tenant: str, run_id: str) -> None:
        self.broker = broker
        self.tenant = tenant
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    def status(self) -> TaskRun:
        return wire.to_task_run(run.load(self.broker, self.tenant, self.run_id), self.broker)

    def wait(self, timeout_s: float = 600) -> TaskRunResult:
        """The result once the run completes; ResultNotReady after `timeout_s`, Conflict
        (with the run's error) if it failed or was cancelled."""
        return run.result(self.broker, self.tenant, self.run_id, timeout_s)

    def result(self, timeout_s: float = 600) -> Any:
        return self.wait(timeout_s).output.content

    def cancel(self) -> TaskRun:
        return wire.to_task_run(run.cancel(self.broker, self.tenant, self.run_id), self.broker)

    def answer(self, input: Any) -> TaskRun:
        """Answers the run's question (it must be in action_required): 422 when the
        answer does not fit the question's schema, 409 when the run is not waiting."""
        return wire.to_task_run(action.answer(self.broker, self.tenant, self.run_id, input), self.broker)


def put(
    processor: str,
    input: Any,
    *,
    metadata: dict[str, Any] | None = None,
    webhook: dict[str, Any] | None = None,
    broker: Broker | None = None,
    tenant: str | None = None,
    spec: Callable[[Settings], dict[str, Any]] | None = None,
    priority: str | None = None,
    run_at: datetime | None = None,
    delay_s: float | None = None,
) -> RunHandle:
    """Enqueues a run of `processor`; `spec` describes it when this process defines
    it (Processor.spec), so it needs no worker to have advertised it."""
    if broker is None:  # inside a run, its worker's broker; else one from the environment
        running = _current.get()
        broker = running._broker if running is not None else _default_broker()
    if spec is not None:
        _LOCAL_SPECS[processor] = spec(broker.settings)
    tenant = tenant or default_tenant(broker)
    if delay_s is not None:
        if run_at is not None:
            raise ValueError("give run_at or delay_s, not both")
        run_at = datetime.fromtimestamp(time.time() + delay_s, UTC)
    body = {"input": input, "processor": processor, "metadata": metadata, "webhook": webhook, "priority": priority}
    req = parse(RunInput, {**body, "run_at": run_at})
    new = run.prepare(broker, _catalog(broker), tenant, req)
    ids, _ = run.create(broker, [new], tenant=tenant)
    return RunHandle(broker, tenant, ids[0])
