"""Counts the Redis commands an action causes, with MONITOR: those sent by clients
(round trips, less pipelining) apart from those run inside Lua scripts."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import redis


def watch(client: redis.Redis, action: Callable[[], object]) -> dict[str, Counter[str]]:
    """Runs `action` with MONITOR on; returns {"client": Counter, "lua": Counter} of
    command names. Only for small actions: MONITOR slows Redis down."""
    seen: dict[str, Counter[str]] = {"client": Counter(), "lua": Counter()}
    stop = threading.Event()
    ready = threading.Event()
    marker = "bench-monitor-stop"

    def listen() -> None:
        with client.monitor() as m:
            ready.set()
            for event in m.listen():
                command = str(event.get("command", ""))
                if marker in command:
                    return
                name = command.split(" ", 1)[0].upper()
                seen["lua" if event.get("client_type") == "lua" else "client"][name] += 1

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        action()
    finally:
        stop.set()
        client.echo(marker)  # the monitor stops when it sees this
        thread.join(10)
    return seen


def per(counter: Counter[str], n: int, top: int = 15) -> dict[str, float]:
    return {k: round(v / n, 2) for k, v in counter.most_common(top)}
