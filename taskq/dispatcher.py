"""`taskq dispatcher`: delivers webhooks — signs, sends, retries, records every attempt.

One process sends up to `dispatcher_concurrency` deliveries at once, each on its own
thread, so a receiver that hangs holds one thread for at most `webhook_timeout_s`
and delays nobody else. Any number of dispatchers can run side by side: a delivery
is claimed (`take_due`) before it is sent and hidden from the others for its
visibility timeout, and only the claim's holder can record the attempt. A dispatcher
killed mid-delivery records nothing, so the delivery comes due again after the
visibility timeout and another dispatcher (or this one, restarted) sends it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import redis

from . import delivery, errors, keys, webhook
from .broker import Broker, now_ms, translated
from .models import Webhook

log = logging.getLogger("taskq.dispatcher")


class Dispatcher:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.settings = broker.settings
        self.stopping = threading.Event()
        self._slots = threading.Semaphore(self.settings.dispatcher_concurrency)
        self._freed = threading.Event()
        # An attempt is cut off at webhook_timeout_s, so a claim this long is never
        # taken over while its holder is still sending.
        self.visibility_s = 2 * self.settings.webhook_timeout_s + 1

    def run_forever(self) -> None:
        """Delivers until SIGTERM or SIGINT; then lets the attempts in flight finish."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._stop)
        log.info("dispatcher started: %d threads", self.settings.dispatcher_concurrency)
        with ThreadPoolExecutor(self.settings.dispatcher_concurrency, thread_name_prefix="taskq-deliver") as pool:
            while not self.stopping.is_set():
                try:
                    self.tick(pool)
                except errors.BrokerUnavailable:
                    log.warning("Redis is unreachable; trying again shortly")
                    self.stopping.wait(1.0)
                except redis.RedisError:
                    log.exception("Redis refused a command; trying again shortly")
                    self.stopping.wait(1.0)
        log.info("dispatcher stopped")

    def _stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.stopping.set()
        self._freed.set()

    def tick(self, pool: ThreadPoolExecutor) -> None:
        """Claims as many due deliveries as there are free threads and starts them;
        waits for the next due one (or a free thread) when there is nothing to do."""
        free = 0
        while self._slots.acquire(blocking=False):
            free += 1
        if free == 0:
            self._freed.wait(self.settings.dispatcher_poll_s)
            self._freed.clear()
            return
        try:
            claims, next_due = delivery.take_due(self.broker, free, self.visibility_s)
        except BaseException:
            self._release(free)
            raise
        self._release(free - len(claims))
        for claim in claims:
            pool.submit(self._deliver_and_release, claim)
        if not claims:
            wait_s = self.settings.dispatcher_poll_s
            if next_due is not None:
                wait_s = min(wait_s, max(0.0, (next_due - now_ms()) / 1000))
            self.stopping.wait(wait_s)

    def _release(self, n: int) -> None:
        for _ in range(n):
            self._slots.release()
        if n:
            self._freed.set()

    def _deliver_and_release(self, claim: delivery.Claim) -> None:
        try:
            self.deliver(claim)
        except errors.BrokerUnavailable:
            # Its claim times out and it is tried again, here or elsewhere.
            log.warning("delivery %s: Redis unreachable; it will be retried", claim.delivery_id)
        except Exception:
            log.exception("delivery %s: unexpected error; it will be retried", claim.delivery_id)
        finally:
            self._release(1)

    def deliver(self, claim: delivery.Claim) -> None:
        """Makes one attempt at one claimed delivery and records it."""
        with translated():
            record: dict[str, str] = self.broker.redis.hgetall(keys.run(claim.run_id))
        started_ms = now_ms()
        if not record or not record.get("webhook"):
            attempt = self._attempt(claim, started_ms, webhook.Response(None, 0, "the run has expired"), "dead")
            delivery.record_attempt(self.broker, claim, attempt, "dead")
            return
        hook = Webhook.model_validate_json(record["webhook"])
        try:
            key = webhook.secret_key(hook.secret or delivery.tenant_secret(self.broker, record["tenant"]))
        except ValueError as exc:
            attempt = self._attempt(claim, started_ms, webhook.Response(None, 0, str(exc)), "dead")
            delivery.record_attempt(self.broker, claim, attempt, "dead")
            return
        body = delivery.payload(record, claim.status, claim.created_ms)
        headers = webhook.request_headers(key, claim.delivery_id, int(time.time()), body, hook.headers)
        response = webhook.send(
            hook.url,
            body,
            headers,
            timeout_s=self.settings.webhook_timeout_s,
            allow_private=self.settings.webhook_allow_private,
        )
        state, next_ms = self._next(claim, response)
        delivery.record_attempt(self.broker, claim, self._attempt(claim, started_ms, response, state), state, next_ms)
        log.info(
            "delivery %s to %s: %s (%s) in %d ms -> %s",
            claim.delivery_id,
            urlsplit(hook.url).hostname,
            response.status_code,
            response.error or "ok",
            response.latency_ms,
            state,
        )

    def _next(self, claim: delivery.Claim, response: webhook.Response) -> tuple[str, int]:
        """What follows an attempt: delivered, gone (410), dead, or pending until when."""
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
        return "pending", now_ms() + int(delay_s * 1000)

    @staticmethod
    def _attempt(claim: delivery.Claim, at_ms: int, response: webhook.Response, outcome: str) -> dict[str, Any]:
        return {
            "attempt": claim.attempts + 1,
            "at_ms": at_ms,
            "status_code": response.status_code,
            "latency_ms": response.latency_ms,
            "error": response.error or (None if response.ok else f"HTTP {response.status_code}"),
            "outcome": outcome,
        }
