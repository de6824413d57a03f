"""Webhook deliveries: one event of one run, on its way to the run's webhook.

A delivery is made by `set_status` (scripts/_lib.lua) in the same step as the status
change it reports; after that it belongs to the dispatcher. Its record is the hash
`taskq:delivery:{id}` (id = `{run_id}.{n}`, which is also the `webhook-id` header):

    run_id, status     the run and the status this event reports
    created_ms         when the status changed (the payload's `timestamp`)
    state              pending (absent too) | delivered | gone (410) | dead
    attempts, round    attempts made in all, and since the last (re)delivery
    claim              token of the dispatcher sending it now
    host               the receiver's `host:port`, noted when first seen by take_due
    next_ms, last_ms, dead_ms

Its attempts are JSON objects in the list `taskq:delivery:{id}:attempts`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from .. import errors, keys, paths, run, wire
from ..broker import Broker, translated
from ..clock import iso, now_ms
from ..ids import partition_of
from ..jsontext import dumps
from ..models import RunStatus, TaskRunOutput, WebhookAttempt, WebhookDelivery
from ..outputs import payloads
from ..record import DELIVERY, RunRecord, TextField, WholeField
from . import signing

# A completed run's output rides in the payload up to this size; past it the payload
# carries `result_url` only and the receiver fetches the result with its API key.
MAX_INLINE_OUTPUT_BYTES = 64 * 1024


class DeliveryRecord:
    """One webhook delivery as stored (its fields: this module's docstring)."""

    __slots__ = ("id", "raw", "attempts")

    def __init__(self, delivery_id: str, raw: Mapping[str, str], attempts: list[str]) -> None:
        self.id = delivery_id
        self.raw = raw
        self.attempts = [json.loads(a) for a in attempts]  # each attempt, oldest first

    @property
    def run_id(self) -> str:
        return self.raw["run_id"]

    @property
    def status(self) -> RunStatus:
        """The status of the run this delivery reports."""
        return RunStatus(self.raw["status"])

    state = TextField("pending")

    created_ms = WholeField()
    next_ms = WholeField()
    dead_ms = WholeField()


def load_deliveries(redis: Redis, delivery_ids: Iterable[str]) -> list[DeliveryRecord]:
    """The deliveries of `delivery_ids` with their attempts, in order, in one round
    trip; those that have expired are left out."""
    ids = list(delivery_ids)
    pipe = redis.pipeline(transaction=False)
    for did in ids:
        pipe.hgetall(keys.delivery(did))
        pipe.lrange(keys.delivery_attempts(did), 0, -1)
    replies = pipe.execute() if ids else []
    return [DeliveryRecord(did, replies[2 * i], replies[2 * i + 1]) for i, did in enumerate(ids) if replies[2 * i]]


@dataclass
class Claim:
    """A due delivery this dispatcher holds until it records the attempt, with what
    sending it needs: the run's fields (None when the run has expired)."""

    delivery_id: str
    token: str
    round: int  # attempts since the last (re)delivery: the place in the schedule
    attempts: int
    run_id: str
    status: str
    created_ms: int
    host: str  # the receiver, `host:port`: the unit of the per-host cap
    run: RunRecord | None = field(default=None, repr=False)


@dataclass
class Due:
    """One take_due: the claims, and why there were not more."""

    claims: list[Claim]
    next_due_in_ms: int | None  # when nothing is due now: how soon the next one is
    skipped: int  # due, but their receiver is at its cap
    deferred: int  # of those, moved back because they filled the head of the queue


def tenant_secret(broker: Broker, tenant: str) -> str:
    """The tenant's default signing secret, made the first time it is asked for."""
    key = keys.tenant_secret(tenant)
    with translated():
        existing = broker.redis.get(key)
        if existing is None:
            broker.redis.set(key, signing.new_secret(), nx=True)
            existing = broker.redis.get(key)
    return str(existing)


def take_due(
    broker: Broker,
    partition: int,
    limit: int,
    visibility_s: float,
    *,
    per_host: int = 0,
    in_flight: dict[str, int] | None = None,
    max_skips: int = 0,
    defer_s: float = 1.0,
) -> Due:
    """Claims up to `limit` due deliveries of the partition, at most `per_host` in
    flight per receiver counting `in_flight` (0: no cap); see scripts/take_due.lua."""
    pairs = [x for host, n in (in_flight or {}).items() if n > 0 for x in (host, n)]
    args = [
        int(visibility_s * 1000),
        limit,
        uuid.uuid4().hex,
        broker.settings.retention_s,
        per_host,
        max_skips,
        int(defer_s * 1000),
        len(DELIVERY),
        *DELIVERY,
        *pairs,
    ]
    with translated():
        reply = broker.scripts.take_due(partition, *args)
    claims = [_claim(c) for c in reply[3:]]
    next_due = int(float(reply[0])) if reply[0] else None
    return Due(claims, next_due, int(reply[1]), int(reply[2]))


def _claim(c: list[Any]) -> Claim:
    run_fields = {name: value for name, value in zip(DELIVERY, c[8], strict=True) if value is not None}
    record = RunRecord(run_fields) if run_fields.get("id") else None
    return Claim(c[0], c[1], int(c[2]), int(c[3]), c[4], c[5], int(c[6]), c[7], record)


def record_attempt(broker: Broker, claim: Claim, attempt: dict[str, Any], state: str, delay_ms: int = 0) -> bool:
    """Records one attempt and what follows it (`pending`: the next one `delay_ms` from
    now, by Redis's clock); False when the claim had gone stale."""
    with translated():
        done = broker.scripts.record_attempt(
            partition_of(claim.delivery_id),
            claim.delivery_id,
            claim.token,
            json.dumps(attempt),
            state,
            delay_ms,
            broker.settings.retention_s,
        )
    return bool(done)


def payload(record: RunRecord, status: str, created_ms: int, broker: Broker | None = None) -> bytes:
    """The body of a delivery: the run as it is now, but with the status the event
    reports; for a completed run its output (or, when large, only where to get it)."""
    completed = status == RunStatus.completed.value
    if broker is not None:
        record = payloads.bind(record, broker)
    if completed and record.get("webhook_body") == "upstream_response":
        return _upstream_body(record)
    task_run = wire.to_task_run(record.with_fields(status=status), broker)
    data: dict[str, Any] = task_run.model_dump(mode="json")
    if completed:
        data["result_url"] = paths.run_result(record.id)
        # (one in the output storage is large: it is not read to be left out)
        if not record.output_offloaded and len(record.output_json) <= MAX_INLINE_OUTPUT_BYTES:
            output = TaskRunOutput(type=record.output_type, content=record.output)  # type: ignore[arg-type]
            data["output"] = output.model_dump(mode="json")
    body = {"type": "task_run.status", "timestamp": iso(created_ms), "data": data}
    return dumps(body, separators=(",", ":")).encode()


def _upstream_body(record: RunRecord) -> bytes:
    """What the async proxy's caller asked for: the upstream's response body as is."""
    body = (record.output or {}).get("body")
    return body.encode() if isinstance(body, str) else dumps(body, separators=(",", ":")).encode()


def for_run(broker: Broker, tenant: str, run_id: str) -> list[WebhookDelivery]:
    """Every delivery of a run, oldest first, each with every attempt."""
    run.load(broker, tenant, run_id)
    with translated():
        ids = broker.redis.lrange(keys.run_deliveries(run_id), 0, -1)
        return [_shape(d) for d in load_deliveries(broker.redis, ids)]


def redeliver(broker: Broker, tenant: str, run_id: str, delivery_id: str) -> WebhookDelivery:
    """Sends a dead-lettered (or 410-stopped) delivery again, on a fresh schedule."""
    run.load(broker, tenant, run_id)
    if not re.fullmatch(re.escape(run_id) + r"\.[0-9]{1,9}", delivery_id):
        raise errors.NotFound(f"delivery {delivery_id} not found for run {run_id}")
    with translated():
        reply = broker.scripts.redeliver(partition_of(delivery_id), delivery_id)
    if isinstance(reply, list):
        if reply[0] == "missing":
            raise errors.NotFound(f"delivery {delivery_id} not found for run {run_id}")
        raise errors.Conflict(
            f"delivery {delivery_id} is {reply[1]}: only a dead or gone delivery can be redelivered",
            {"state": reply[1]},
        )
    return next(d for d in for_run(broker, tenant, run_id) if d.delivery_id == delivery_id)


def _shape(d: DeliveryRecord) -> WebhookDelivery:
    attempts = [
        WebhookAttempt(
            attempt=a["attempt"],
            attempted_at=iso(a["at_ms"]) or "",
            status_code=a.get("status_code"),
            latency_ms=a["latency_ms"],
            error=a.get("error"),
            outcome=a["outcome"],
        )
        for a in d.attempts
    ]
    return WebhookDelivery(
        delivery_id=d.id,
        run_id=d.run_id,
        event_status=d.status,
        state=d.state,
        created_at=iso(d.created_ms) or "",
        next_attempt_at=iso(d.next_ms),
        dead_at=iso(d.dead_ms),
        attempts=attempts,
    )


def dead_for_tenant(broker: Broker, tenant: str, limit: int = 100) -> list[WebhookDelivery]:
    """The tenant's dead-lettered deliveries within the retention, most recently given
    up first, from the tenant's own index (record_attempt.lua writes it), however many
    other tenants' deliveries died meanwhile."""
    since_ms = now_ms() - broker.settings.retention_s * 1000
    with translated():
        mine: list[tuple[str, float]] = []
        for partition in range(broker.partitions):
            index = keys.tenant_dead(partition, tenant)
            mine += broker.redis.zrevrangebyscore(index, "+inf", since_ms, start=0, num=limit, withscores=True)
        newest = [did for did, _ in sorted(mine, key=lambda pair: pair[1], reverse=True)[:limit]]
        return [_shape(d) for d in load_deliveries(broker.redis, newest)]
