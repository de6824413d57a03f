"""Who is working: each worker registers in taskq's own registry (`taskq:workers`,
`taskq:worker:{name}`: its host, queues, processors, concurrency, limits, state),
beats while alive, and leaves when it stops. The gateway reads it to say when no live
worker serves a processor (a run's TaskRun warns); `taskq info` and the dashboard
show it. On a single Redis the worker also registers with RQ (`rq:workers`), so
`rq info` lists it beside the queue depths.

Its state is `busy` while it holds a run and `idle` otherwise, as of its last beat
(every heartbeat_s, at most BEAT_S: a state written per claim would cost a command
per run)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

import rq

from .. import keys
from ..broker import Broker
from ..errors import LimitDeclarationError
from ..limits import Budget
from ..registry import BEAT_S, live_workers

log = logging.getLogger("taskq.worker")


class Registration:
    def __init__(
        self,
        broker: Broker,
        name: str,
        queues: list[str],
        processors: list[str],
        concurrency: int,
        pool: str,
        limits: dict[str, Budget],
    ) -> None:
        self.broker = broker
        self.name = name
        self.beat_s = min(BEAT_S, broker.settings.heartbeat_s)
        self.key = keys.worker(name)
        self.record: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": ",".join(queues),
            "processors": ",".join(processors),
            "concurrency": concurrency,
            "pool": pool,
            "limits": json.dumps({k: b.to_json() for k, b in sorted(limits.items()) if k.startswith("n:")}),
            "state": "idle",
            "abandoned": 0,
        }
        self._last = 0.0
        self._state = "idle"
        self._abandoned = 0
        self.rq_worker: rq.SimpleWorker | None = None
        if not broker.cluster:
            connection = broker.rq_connection()
            self.rq_worker = rq.SimpleWorker(
                [rq.Queue(q, connection=connection) for q in queues], connection=connection, name=name
            )

    def check_limits(self) -> None:
        """A named Limit declared here with another budget than a live worker's stops
        this worker: two budgets for one name cannot both hold."""
        mine = json.loads(self.record["limits"])
        for other in live_workers(self.broker):
            theirs = json.loads(other.get("limits") or "{}")
            for name, budget in mine.items():
                if name in theirs and theirs[name] != budget:
                    raise LimitDeclarationError(
                        f"Limit {name[2:]!r} is declared here as {_described(budget)}, but live worker "
                        f"{other['name']} on {other.get('host')} declares {_described(theirs[name])}: stop the "
                        "workers with the old budget first, or give the new budget a new name"
                    )

    def birth(self) -> None:
        self.check_limits()
        self._write()
        if self.rq_worker is not None:
            self.rq_worker.register_birth()
            # Beside RQ's fields: how many runs this worker holds at once.
            self.rq_worker.connection.hset(self.rq_worker.key, "concurrency", self.record["concurrency"])
            self.rq_worker.set_state(self._state)
        self._last = time.monotonic()

    def _write(self) -> None:
        pipe = self.broker.redis.pipeline(transaction=False)
        pipe.hset(self.key, mapping={**self.record, "state": self._state, "abandoned": self._abandoned})
        pipe.expire(self.key, max(60, int(10 * self.beat_s)))
        pipe.zadd(keys.WORKERS, {self.name: self.broker.now_ms()})
        pipe.execute()

    def beat(self, in_flight: int, abandoned: int = 0) -> None:
        if time.monotonic() - self._last < 0.9 * self.beat_s:  # 0.9: the supervisor's own pace may jitter
            return
        self._last = time.monotonic()
        state = "busy" if in_flight else "idle"
        changed = state != self._state
        self._state, self._abandoned = state, abandoned
        self._write()
        if self.rq_worker is not None:
            self.rq_worker.heartbeat()
            if changed:
                self.rq_worker.set_state(state)

    def death(self) -> None:
        try:
            pipe = self.broker.redis.pipeline(transaction=False)
            pipe.zrem(keys.WORKERS, self.name)
            pipe.delete(self.key)
            pipe.execute()
            if self.rq_worker is not None:
                self.rq_worker.register_death()
        except Exception:
            log.warning("could not unregister", exc_info=True)
        finally:
            if self.rq_worker is not None:
                self.rq_worker.connection.close()


def _described(budget: dict[str, Any]) -> str:
    """A budget as a person would say it: "rate 500/60s, concurrency 50, burst 1"."""
    parts = [f"rate {budget['rate']}"] if budget.get("rate") else []
    if budget.get("concurrency"):
        parts.append(f"concurrency {budget['concurrency']}")
    return ", ".join([*parts, f"burst {budget.get('burst', 1)}"])
