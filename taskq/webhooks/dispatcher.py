"""`taskq dispatcher`: delivers webhooks — signs, sends, retries, records every attempt.

One process sends up to `dispatcher_concurrency` deliveries at once, each on its own
thread, and at most `dispatcher_per_host` of them to one receiver (host:port), so a
receiver that hangs holds at most that many threads, each for at most
`webhook_timeout_s`, and the others keep the rest. Any number of dispatchers can run
side by side: a delivery is claimed (`take_due`) before it is sent and hidden from
the others for its visibility timeout, and only the claim's holder can record the
attempt. A dispatcher killed mid-delivery records nothing, so the delivery comes due
again after the visibility timeout and another dispatcher (or this one, restarted)
sends it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from .. import sync, tracing
from ..broker import Broker, Outage
from ..clock import now_ms
from ..errors import StorageUnavailable
from ..models import Webhook
from . import delivery, signing, transport

log = logging.getLogger("taskq.dispatcher")


# A receiver's deliveries that fill the head of the queue while it is at its cap are
# looked at again this much later: long enough not to spin on them, short enough that
# a receiver which frees a slot soon loses little.
BLOCKED_DEFER_S = 1.0
# How often the INFO summary is written (each delivery is logged at DEBUG).
SUMMARY_EVERY_S = 10.0


class Dispatcher:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.settings = broker.settings
        self.stopping = sync.Event()  # these two are set by the SIGTERM handler
        self._slots = threading.Semaphore(self.settings.dispatcher_concurrency)
        self._freed = sync.Event()
        # Sends in flight per receiver (host:port), for the per-host cap.
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self.per_host = max(0, self.settings.dispatcher_per_host)
        # How far past a capped receiver's deliveries take_due looks for others.
        self.max_skips = max(16, 4 * self.per_host)
        # An attempt is cut off at webhook_timeout_s, so a claim this long is never
        # taken over while its holder is still sending.
        self.visibility_s = 2 * self.settings.webhook_timeout_s + 1
        self._outage = Outage(log, "delivering webhooks")
        self.stats = Stats()
        self._secrets: dict[str, str] = {}
        self._next_partition = 0
        self.pool = transport.Pool(per_origin=self.per_host or self.settings.dispatcher_concurrency)

    def run_forever(self) -> None:
        """Delivers until SIGTERM or SIGINT; then lets the attempts in flight finish."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._stop)
        log.info(
            "dispatcher started: %d threads, at most %s per receiver",
            self.settings.dispatcher_concurrency,
            self.per_host or "all",
        )
        with ThreadPoolExecutor(self.settings.dispatcher_concurrency, thread_name_prefix="taskq-deliver") as pool:
            while not self.stopping.is_set():
                try:
                    self.tick(pool)
                except Exception as exc:  # the same tick again shortly
                    self._outage.failed(exc)
                    self.stopping.wait(1.0)
                else:
                    self._outage.ok()
                self.stats.log_every(SUMMARY_EVERY_S, self.in_flight())
        self.pool.close()
        self.stats.log_every(0, {})
        log.info("dispatcher stopped")

    def _stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.stopping.set()
        self._freed.set()

    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return dict(self._in_flight)

    def tick(self, pool: ThreadPoolExecutor) -> None:
        """Claims as many due deliveries as there are free threads (less those whose
        receiver is at its cap) and starts them; when that is fewer than the free
        threads, waits for a send to end, the next due one, or the poll interval."""
        free = 0
        while self._slots.acquire(blocking=False):
            free += 1
        if free == 0:
            self._wait(self.settings.dispatcher_poll_s)
            return
        # From here on, only a send that ends wakes the wait below.
        self._freed.clear()
        try:
            due = self._take_due(free)
        except BaseException:
            self._release(free)
            raise
        with self._lock:
            for claim in due.claims:
                self._in_flight[claim.host] = self._in_flight.get(claim.host, 0) + 1
        self._release(free - len(due.claims), wake=False)
        for claim in due.claims:
            pool.submit(self._deliver_and_release, claim)
        self.stats.deferred += due.deferred
        if len(due.claims) == free or due.deferred:
            return
        wait_s = self.settings.dispatcher_poll_s
        if due.next_due_in_ms is not None:
            wait_s = min(wait_s, due.next_due_in_ms / 1000)
        self._wait(wait_s)

    def _take_due(self, free: int) -> delivery.Due:
        """Claims up to `free` due deliveries, from the partitions in turn."""
        partitions = self.broker.partitions
        claims: list[delivery.Claim] = []
        next_due: list[int] = []
        skipped = deferred = 0
        for step in range(partitions):
            if len(claims) >= free:
                break
            partition = (self._next_partition + step) % partitions
            due = delivery.take_due(
                self.broker,
                partition,
                free - len(claims),
                self.visibility_s,
                per_host=self.per_host,
                in_flight=self._in_flight_with(claims),
                max_skips=self.max_skips,
                defer_s=BLOCKED_DEFER_S,
            )
            claims += due.claims
            skipped, deferred = skipped + due.skipped, deferred + due.deferred
            if due.next_due_in_ms is not None:
                next_due.append(due.next_due_in_ms)
        self._next_partition = (self._next_partition + 1) % partitions
        return delivery.Due(claims, min(next_due) if next_due and not claims else None, skipped, deferred)

    def _in_flight_with(self, claims: list[delivery.Claim]) -> dict[str, int]:
        counts = self.in_flight()
        for claim in claims:
            counts[claim.host] = counts.get(claim.host, 0) + 1
        return counts

    def step(self) -> tuple[int, int | None]:
        """Delivers what is due now in this thread, one after another, with no pool
        (tests, and anyone driving deliveries by hand): returns how many attempts were
        made and, when none was due, how soon the next one is (ms, or None)."""
        due = self._take_due(self.settings.dispatcher_concurrency)
        for claim in due.claims:
            self.deliver(claim)
        return len(due.claims), due.next_due_in_ms

    def close(self) -> None:
        self.pool.close()

    def _tenant_secret(self, tenant: str) -> str:
        """A tenant's default signing secret: made once, never changed, so kept here."""
        secret = self._secrets.get(tenant)
        if secret is None:
            secret = self._secrets[tenant] = delivery.tenant_secret(self.broker, tenant)
        return secret

    def _wait(self, timeout_s: float) -> None:
        self._freed.wait_and_clear(0 if self.stopping.is_set() else timeout_s)

    def _release(self, n: int, wake: bool = True) -> None:
        for _ in range(n):
            self._slots.release()
        if n and wake:
            self._freed.set()

    def _deliver_and_release(self, claim: delivery.Claim) -> None:
        try:
            self.deliver(claim)
        except Exception as exc:  # its claim times out and it is tried again, here or elsewhere
            self._outage.failed(exc)
        finally:
            with self._lock:
                left = self._in_flight.get(claim.host, 1) - 1
                if left > 0:
                    self._in_flight[claim.host] = left
                else:
                    self._in_flight.pop(claim.host, None)
            self._release(1)

    def deliver(self, claim: delivery.Claim) -> None:
        """Makes one attempt at one claimed delivery and records it."""
        started_ms = now_ms()
        record = claim.run
        if record is None or not record.get("webhook"):
            self._record(claim, started_ms, transport.Response(None, 0, "the run has expired"), "dead")
            return
        try:
            # A pydantic ValidationError is a ValueError: a stored webhook that today's
            # rules refuse (headers, say) is dead, not retried forever.
            hook = Webhook.model_validate_json(record.get("webhook") or "")
            secret = hook.secret or self._tenant_secret(record.tenant)
            key = signing.secret_key(secret)
            # So is a run stored before non-finite numbers were refused: no JSON body.
            body = delivery.payload(record, claim.status, claim.created_ms, self.broker)
        except ValueError as exc:
            self._record(claim, started_ms, transport.Response(None, 0, str(exc)), "dead")
            return
        except StorageUnavailable as exc:  # its output is in the output storage, away now: tried again later
            failure = transport.Response(None, 0, exc.message)
            self._record(claim, started_ms, failure, *self._next(claim, failure))
            return
        headers = signing.request_headers(key, claim.delivery_id, int(time.time()), body, hook.headers)
        span = tracing.start_delivery(record, claim.delivery_id, claim.status, claim.attempts + 1, claim.host)
        response = transport.send(
            hook.url,
            body,
            tracing.propagate(headers, span),
            timeout_s=self.settings.webhook_timeout_s,
            allow_private=self.settings.webhook_allow_private,
            pool=self.pool,
        )
        state, delay_ms = self._next(claim, response)
        tracing.end_delivery(span, response.status_code, response.error, state)
        self._record(claim, started_ms, response, state, delay_ms)

    def _record(
        self, claim: delivery.Claim, started_ms: int, response: transport.Response, state: str, delay_ms: int = 0
    ) -> None:
        delivery.record_attempt(self.broker, claim, self._attempt(claim, started_ms, response, state), state, delay_ms)
        self.stats.count(state, response)
        if response.refused_address is not None:
            # The operator's log names the address; the tenant's attempt does not.
            log.warning(
                "delivery %s to %s refused: non-public address %s",
                claim.delivery_id,
                claim.host,
                response.refused_address,
            )
        log.debug(
            "delivery %s to %s: %s (%s) in %d ms -> %s",
            claim.delivery_id,
            claim.host,
            response.status_code,
            response.error or "ok",
            response.latency_ms,
            state,
        )

    def _next(self, claim: delivery.Claim, response: transport.Response) -> tuple[str, int]:
        """What follows an attempt: delivered, gone (410), dead, or pending for how long (ms)."""
        if response.ok:
            return "delivered", 0
        if response.status_code == 410:
            return "gone", 0
        schedule = self.settings.webhook_schedule
        if claim.round >= len(schedule):
            return "dead", 0
        delay_s = schedule[claim.round]
        if response.retry_after_s is not None:
            # Honoured, but never past the schedule's longest step.
            delay_s = min(max(delay_s, response.retry_after_s), max(schedule))
        return "pending", int(delay_s * 1000)

    @staticmethod
    def _attempt(claim: delivery.Claim, at_ms: int, response: transport.Response, outcome: str) -> dict[str, Any]:
        return {
            "attempt": claim.attempts + 1,
            "at_ms": at_ms,
            "status_code": response.status_code,
            "latency_ms": response.latency_ms,
            "error": response.error or (None if response.ok else f"HTTP {response.status_code}"),
            "outcome": outcome,
        }


class Stats:
    """Counts of attempts by outcome, written as one INFO line now and then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[str, int] = {}
        self._latency_ms = 0
        self._since = time.monotonic()
        self.deferred = 0  # only the tick thread adds to it

    def count(self, state: str, response: transport.Response) -> None:
        with self._lock:
            self._outcomes[state] = self._outcomes.get(state, 0) + 1
            self._latency_ms += response.latency_ms

    def log_every(self, every_s: float, in_flight: dict[str, int]) -> None:
        """Writes the summary when `every_s` has passed since the last one (and there
        is something to say), then starts counting again."""
        now = time.monotonic()
        if now - self._since < every_s:
            return
        with self._lock:
            outcomes, latency_ms, self._outcomes, self._latency_ms = self._outcomes, self._latency_ms, {}, 0
        deferred, self.deferred, since, self._since = self.deferred, 0, self._since, now
        attempts = sum(outcomes.values())
        if not attempts and not in_flight:
            return
        log.info(
            "%d attempts in %.0f s (%s), mean latency %d ms; in flight: %d, to %d receivers; deferred: %d",
            attempts,
            now - since,
            ", ".join(f"{state} {n}" for state, n in sorted(outcomes.items())) or "none",
            latency_ms // attempts if attempts else 0,
            sum(in_flight.values()),
            len(in_flight),
            deferred,
        )
