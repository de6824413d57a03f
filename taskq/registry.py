"""Who is working, as the workers register themselves (engine/registration.py writes
it): `taskq:workers` (name -> last beat, Redis's clock) and `taskq:worker:{name}`."""

from __future__ import annotations

import time

from . import keys
from .broker import Broker, translated

BEAT_S = 10  # a worker beats at most this far apart (its heartbeat, if shorter)


def alive_since(broker: Broker) -> int:
    """A worker whose last beat is older than this (Redis's clock, ms) is gone."""
    window_s = max(broker.settings.lease_s, 3 * min(BEAT_S, broker.settings.heartbeat_s))
    return broker.now_ms() - int(window_s * 1000)


def live_workers(broker: Broker) -> list[dict[str, str]]:
    """The record of every worker alive now."""
    names = broker.redis.zrangebyscore(keys.WORKERS, alive_since(broker), "+inf")
    pipe = broker.redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
    return [{**rec, "name": name} for name, rec in zip(names, pipe.execute(), strict=True) if rec]


def host_of(broker: Broker, name: str) -> str | None:
    """The host a worker registered from; None once it has left (or never was)."""
    with translated():
        host = broker.redis.hget(keys.worker(name), "host")
    return str(host) if host else None


def served(broker: Broker) -> set[str]:
    """The processors some live worker serves (read again at most every
    `processor_cache_s`: a gateway answers many reads between two beats)."""
    now = time.monotonic()
    cached = _SERVED.get(id(broker))
    if cached is None or now - cached[0] > broker.settings.processor_cache_s:
        found = {p for rec in live_workers(broker) for p in rec.get("processors", "").split(",") if p}
        cached = _SERVED[id(broker)] = (now, found)
    return cached[1]


_SERVED: dict[int, tuple[float, set[str]]] = {}
