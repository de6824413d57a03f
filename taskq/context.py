"""`current_run()`: what a processor knows of the run it is serving."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from . import action, keys
from .broker import Broker

PROGRESS_MAXLEN = 1000

_current: ContextVar[CurrentRun | None] = ContextVar("taskq_current_run", default=None)


@dataclass
class CurrentRun:
    """The run a processor is serving. Each run in flight has its own (a context
    variable: per thread, per asyncio task)."""

    run_id: str
    attempt: int
    _broker: Broker
    token: str = ""  # the attempt's lease: outputs are recorded only while it holds
    answers: list[Any] = field(default_factory=list)  # answers to this run's ask()s, in order
    asked: int = 0

    def ask(self, message: str, schema: dict[str, Any] | None = None) -> Any:
        """Asks a person (see taskq/action.py): returns the answer once given; until
        then the run waits in `action_required`, holding no worker, and runs again
        from the start when answered."""
        return action.ask(self, message, schema)

    def progress(self, message: str) -> None:
        """Adds a progress message to the run's event stream."""
        self._broker.redis.xadd(
            keys.run_events(self.run_id),
            {"type": "task_run.progress", "message": str(message)[:2000]},  # its time: the event's id
            maxlen=PROGRESS_MAXLEN,
            approximate=True,
            # Its stream exists from the run's first event until it has ended and folded
            # its events (record.py): a late message never makes a stream nobody expires.
            nomkstream=True,
        )


def current_run() -> CurrentRun:
    run = _current.get()
    if run is None:
        raise RuntimeError("current_run() is only available inside a running processor")
    return run
