"""Per-tenant caps on what holds a connection open: SSE streams and /result long polls.

Counted per gateway process, in memory: the thing protected is this process's
connections (greenlets, Redis connections, file descriptors), a crashed process
takes its counts with it (nothing to leak or reap in Redis), and taking or giving
back a slot costs no Redis round trip. With N gateway processes a tenant may hold
N x the cap in all; the cap is about fairness inside a process, not a global quota.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import errors

RETRY_AFTER_S = 5


class Slots:
    """How many long-lived requests each tenant holds in this process."""

    def __init__(self, cap: int, total_cap: int = 0) -> None:
        self.cap = cap
        self.total_cap = total_cap
        self._total = 0
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, tenant: str) -> None:
        """Raises TooManyStreams (429) when the tenant already holds `cap`."""
        with self._lock:
            if self.cap and self._held[tenant] >= self.cap:
                raise errors.TooManyStreams(
                    f"this API key already holds {self.cap} open streams and long polls on this gateway; "
                    "close one or retry later",
                    {"max_streams_per_tenant": self.cap},
                    retry_after_s=RETRY_AFTER_S,
                )
            if self.total_cap and self._total >= self.total_cap:
                raise errors.TooManyStreams(
                    "this gateway holds as many open streams and long polls as it allows; retry later",
                    {"max_streams_per_process": self.total_cap},
                    retry_after_s=RETRY_AFTER_S,
                )
            self._held[tenant] += 1
            self._total += 1

    def give_back(self, tenant: str) -> None:
        with self._lock:
            self._held[tenant] -= 1
            self._total -= 1
            if self._held[tenant] <= 0:
                del self._held[tenant]

    def held(self, tenant: str) -> int:
        with self._lock:
            return self._held[tenant]

    @contextmanager
    def holding(self, tenant: str) -> Iterator[None]:
        self.take(tenant)
        try:
            yield
        finally:
            self.give_back(tenant)

    def stream(self, tenant: str, events: Iterator[str]) -> Held:
        """`events` holding one of the tenant's slots until the response is closed
        (the client left, the stream ended, or the server stops it)."""
        self.take(tenant)
        return Held(events, lambda: self.give_back(tenant))


class Held:
    """An iterator that gives its slot back exactly once, when closed. The WSGI server
    calls close() on every response iterable, even one never iterated."""

    def __init__(self, inner: Iterator[str], release: Any) -> None:
        self._inner = inner
        self._release = release
        self._closed = False

    def __iter__(self) -> Held:
        return self

    def __next__(self) -> str:
        return next(self._inner)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._release()
