"""How full Redis is, and the admission check for new runs.

Each master's used memory is read against its `maxmemory` (INFO memory). Past
TASKQ_MEMORY_HIGH_WATER of it, a new run that would land on that master is refused
(RedisFull, a 503 with Retry-After), so that the runs already accepted keep the room
they need to finish: their status writes, results, events and webhooks are never
checked. With `maxmemory` 0 (not set) there is no mark to check against.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis, RedisCluster
from redis.exceptions import ResponseError

from . import errors

log = logging.getLogger("taskq")

# Room comes back as finished runs expire (retention) or when maxmemory is raised:
# a matter of minutes, not of the next second.
RETRY_AFTER_S = 30

OOM_MESSAGE = (
    "Redis is out of memory (maxmemory reached) and refused the write; nothing was changed. "
    "Retry later: room comes back as finished runs expire"
)


@dataclass(frozen=True)
class NodeMemory:
    """One master's memory, as INFO memory tells it."""

    node: str  # host:port
    used_bytes: int
    max_bytes: int  # maxmemory; 0: not set (Redis grows until the machine runs out)

    @property
    def used_fraction(self) -> float | None:
        return self.used_bytes / self.max_bytes if self.max_bytes else None


def read(client: Redis) -> list[NodeMemory]:
    """Every master's memory now: one INFO memory each."""
    if isinstance(client, RedisCluster):
        return [_memory(node.name, client.get_redis_connection(node)) for node in client.get_primaries()]
    kwargs = client.connection_pool.connection_kwargs
    name = kwargs.get("path") or f"{kwargs.get('host', 'master')}:{kwargs.get('port', '')}".rstrip(":")
    return [_memory(name, client)]


def _memory(name: str, client: Redis) -> NodeMemory:
    info = client.info("memory")
    return NodeMemory(name, int(info["used_memory"]), int(info.get("maxmemory") or 0))


class MemoryWatch:
    """The masters' memory as last read, read again once it is `ttl_s` old: the
    admission check costs one INFO per master per process every `ttl_s`, however
    many requests it answers."""

    def __init__(self, client: Callable[[], Redis], ttl_s: float) -> None:
        self._client = client
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeMemory] = {}
        self._read_at: float | None = None  # monotonic
        self._refused = False

    def nodes(self) -> dict[str, NodeMemory]:
        # One reader at a time: the threads that come meanwhile use its reading.
        with self._lock:
            if self._read_at is None or time.monotonic() - self._read_at >= self.ttl_s:
                self._nodes = self._read()
                self._read_at = time.monotonic()
            return self._nodes

    def _read(self) -> dict[str, NodeMemory]:
        try:
            return {m.node: m for m in read(self._client())}
        except ResponseError as exc:  # a managed Redis that refuses INFO: no check, said once
            if not self._refused:
                log.warning("Redis refused INFO memory (%s): no high-water check for new runs", exc)
                self._refused = True
            return {}


def admit(memory: NodeMemory | None, high_water: float) -> None:
    """Raises RedisFull when the master a new run would land on is past `high_water`
    of its maxmemory. No check when maxmemory is not set, the mark is 0 (off), or the
    master is not known yet (a failover just made it)."""
    if memory is None or not memory.max_bytes or high_water <= 0:
        return
    used = memory.used_bytes / memory.max_bytes
    if used < high_water:
        return
    raise errors.RedisFull(
        f"Redis memory at {used:.0%} of maxmemory; new runs are refused above the high-water mark of "
        f"{high_water:.0%} (TASKQ_MEMORY_HIGH_WATER) so that runs already accepted can finish. "
        "Retry later: room comes back as finished runs expire",
        {"reason": "redis_memory_high", "memory_used_fraction": round(used, 4), "high_water": high_water},
        retry_after_s=RETRY_AFTER_S,
    )


def summary(nodes: list[NodeMemory], high_water: float) -> str:
    """One line for an operator: how full the fullest master is, and what happens at
    the mark (`taskq info`, the dashboard)."""
    if not nodes:
        return "Redis memory: unknown"
    fullest = max(nodes, key=lambda m: (m.used_fraction or 0, m.used_bytes))
    where = f" on the fullest of {len(nodes)} masters" if len(nodes) > 1 else ""
    if not fullest.max_bytes:
        return (
            f"Redis memory {human_bytes(fullest.used_bytes)}{where}; maxmemory not set: "
            "no high-water check (Redis grows until the machine runs out)"
        )
    line = (
        f"Redis memory {human_bytes(fullest.used_bytes)} of {human_bytes(fullest.max_bytes)} "
        f"({fullest.used_fraction:.0%}){where}; "
    )
    if high_water <= 0:
        return line + "high-water check off (TASKQ_MEMORY_HIGH_WATER=0)"
    if (fullest.used_fraction or 0) >= high_water:
        return line + f"past the high-water mark of {high_water:.0%}: new runs are being refused"
    return line + f"new runs are refused from {high_water:.0%} (TASKQ_MEMORY_HIGH_WATER)"


def human_bytes(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    size, i = float(n), 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{n} B" if i == 0 else f"{size:.1f} {units[i]}"
