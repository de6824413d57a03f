"""The stored records, parsed once at the edge: every load returns a typed record,
never a dict, and the field list of each is written here once. Other modules take
named projections of it (`WIRE`, `DELIVERY`, the Lua side's `LINKS`).

A run is the hash `taskq:run:{id}`; its fields (absent when empty):

    id, tenant, processor, queue, timeout_s, max_retries
    input            JSON of the input (an object, or a string for text input); like
                     output and answers, a payload: plain, compressed or a reference
                     to the output storage (payload.py), decoded here on read
    metadata         JSON object
    output_schema    JSON Schema the output must meet (from task_spec)
    webhook          JSON of the webhook; webhook_all = '1' for every status change
    webhook_body     'upstream_response' (set by the async proxy only, never by a
                     client): a completed run's webhook carries the upstream's answer
    status           a RunStatus; changed only by the scripts in scripts/
    created_ms, modified_ms, started_ms, finished_ms, next_attempt_ms   epoch ms,
                     Redis's clock
    attempts         attempts started; interruptions: those cut short without spending
                     a retry (a shutdown, a question)
    token            the lease holder of the current attempt; worker: the name of the
                     worker that took the latest attempt
    error, errors, errors_n   the last error, every attempt's (JSON), and how many
    output_type, output   the result: 'json' or 'text', and its JSON
    outputs_count, outputs_bytes, outputs_seq   its output files: how many, their total
                     size, saves made (listed beside the record, outputs/record.py);
                     has_outputs = '1' once it has any (`outputs`: a JSON list of them,
                     in records of earlier versions)
    warnings         JSON list of WarningObjects: request fields not acted on
    required_action  its question while waiting (JSON: message, schema), asked at
                     asked_ms, due by answer_deadline_ms; answers: those given (action.py)
    lane             where it waits when due: `processor|tenant|key` (flow-control.md)
    priority_band    0 high, 1 normal, 2 low: its place in its lane
    limits           the limits it needs to start, "id*units,…" (limits.py); holds: those
                     it holds while running, given back when it stops
    taskgroup_id, delivery_seq
    traceparent      W3C trace context of the span that made it, with traces on
                     (tracing.py): its attempts and deliveries are children of it
    events           once it has ended: its event stream folded into one JSON list, the
                     stream itself kept only EVENTS_LINGER_S more (events.py reads it)

A run that ends keeps only what a finished run is read for: set_status drops
FINISHED_DROP from its record in the step that ends it (docs/architecture.md, "What
a run costs in Redis").

A group is the hash `taskq:group:{id}`: id, tenant, metadata, created_ms, modified_ms,
num_task_runs, and `c:<status>`, how many of its runs are in each status (kept by
set_status in the same atomic step as the run's change).

A webhook delivery is the hash `taskq:delivery:{id}`: its record and fields are in
webhooks/delivery.py, typed with the fields here (`TextField`, `WholeField`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

from redis import Redis

from . import keys, payload
from .folding import Entry, unfold
from .models import PRIORITY_NAMES, Priority, RunStatus

T = TypeVar("T")


def _int(value: str | None) -> int:
    return int(value) if value else 0


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


class Field:
    """A typed view of one stored field, named as the attribute it is assigned to."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


class TextField(Field):
    """A stored field as text; `default` when absent or empty."""

    def __init__(self, default: str = "") -> None:
        self.default = default

    def __get__(self, record: Any, owner: type | None = None) -> str:
        return record.raw.get(self.name) or self.default


class WholeField(Field):
    """A stored whole number (epoch ms, a count); 0 when absent."""

    def __get__(self, record: Any, owner: type | None = None) -> int:
        return _int(record.raw.get(self.name))


class JsonField(Field, Generic[T]):
    """A stored JSON field, decoded on first use and kept on the record (as
    functools.cached_property does); `empty()` when absent."""

    def __init__(self, empty: Callable[[], Any] | None = None) -> None:
        self.empty = empty

    def __get__(self, record: Any, owner: type | None = None) -> T:
        value = _json(record.raw.get(self.name))
        if value is None and self.empty is not None:
            value = self.empty()
        record.__dict__[self.name] = value
        return cast(T, value)


class RunRecord:
    """One run as stored: typed fields over the raw hash. JSON fields are decoded on
    first use, once; payloads (input, output, answers) from whichever form they are
    kept in, those in the output storage read through `blobs` (outputs.payloads.bind)."""

    def __init__(self, raw: Mapping[str, str], blobs: payload.Blobs | None = None) -> None:
        self.raw = raw
        self.blobs = blobs

    @classmethod
    def from_hash(cls, data: Mapping[str, str] | Sequence[str], blobs: payload.Blobs | None = None) -> RunRecord:
        """From HGETALL's reply (a mapping), or a flat field/value list as the scripts
        return it (a later value of a field wins)."""
        if not isinstance(data, Mapping):
            data = dict(zip(data[::2], data[1::2], strict=False))
        return cls(data, blobs)

    def reading(self, blobs: payload.Blobs) -> RunRecord:
        """This record, reading its offloaded payloads with `blobs`."""
        return RunRecord(self.raw, blobs)

    def __repr__(self) -> str:
        return f"RunRecord({self.id!r}, {self.raw.get('status')!r})"

    def get(self, name: str) -> str | None:
        """A stored field as text (None when absent): for what has no typed view."""
        return self.raw.get(name)

    def with_fields(self, **fields: str | int | None) -> RunRecord:
        """A copy with some fields replaced (None: removed), as a view of the run at
        another moment (events.py) or before it was read back (a run just made)."""
        raw = dict(self.raw)
        for name, value in fields.items():
            if value is None:
                raw.pop(name, None)
            else:
                raw[name] = str(value)
        return RunRecord(raw, self.blobs)

    # -- what the run is
    @property
    def id(self) -> str:
        return self.raw["id"]

    tenant = TextField()
    processor = TextField()
    queue = TextField("default")
    timeout_s = WholeField()
    max_retries = WholeField()

    @property
    def taskgroup_id(self) -> str | None:
        return self.raw.get("taskgroup_id") or None

    def payload_text(self, name: str) -> str | None:
        """The JSON text of a payload field (payload.FIELDS), None when it has none."""
        return payload.text(self.raw.get(name), self.blobs)

    @functools.cached_property
    def input(self) -> Any:
        return json.loads(self.payload_text("input") or "null")

    metadata = JsonField[dict[str, Any] | None]()
    output_schema = JsonField[dict[str, Any] | None]()
    webhook = JsonField[dict[str, Any] | None]()
    warnings = JsonField[list[dict[str, Any]] | None]()
    lane = TextField()

    @property
    def priority(self) -> Priority:
        return PRIORITY_NAMES[_int(self.raw.get("priority_band") or "1")]

    # -- where it stands
    @property
    def status(self) -> RunStatus:
        return RunStatus(self.raw["status"])

    attempts = WholeField()
    interruptions = WholeField()
    token = TextField()
    worker = TextField()
    created_ms = WholeField()

    @property
    def modified_ms(self) -> int:
        # (a finished run's last change is its end: FINISHED_DROP has modified_ms)
        return _int(self.raw.get("modified_ms")) or self.finished_ms or self.created_ms

    started_ms = WholeField()
    finished_ms = WholeField()
    next_attempt_ms = WholeField()
    error = JsonField[dict[str, Any] | None]()
    errors = JsonField[list[dict[str, Any]]](list)

    # -- what it made
    @property
    def output_type(self) -> str:
        return self.raw.get("output_type", "json")

    @functools.cached_property
    def output_json(self) -> str:
        return self.payload_text("output") or "null"

    @property
    def output_offloaded(self) -> bool:
        """Whether its output is in the output storage (then at least
        TASKQ_PAYLOAD_OFFLOAD_BYTES long), known without reading it."""
        return payload.referenced(self.raw.get("output")) is not None

    @functools.cached_property
    def output(self) -> Any:
        return json.loads(self.output_json)

    @property
    def outputs_count(self) -> int:
        if self.raw.get("outputs"):  # recorded by an earlier version: one JSON list
            return len(json.loads(self.raw["outputs"]))
        return _int(self.raw.get("outputs_count"))

    # -- a person's part (action.py)
    @functools.cached_property
    def required_action(self) -> dict[str, Any] | None:
        """The question it waits on ({message, schema}), only while it waits."""
        if self.raw.get("status") != RunStatus.action_required.value:
            return None
        return _json(self.raw.get("required_action"))

    asked_ms = WholeField()
    answer_deadline_ms = WholeField()

    @functools.cached_property
    def answers(self) -> list[Any]:
        return _json(self.payload_text("answers")) or []

    @functools.cached_property
    def events(self) -> list[Entry] | None:
        """Its event stream as folded into the record when it ended (set_status); None
        while it has not ended, or if it ended before streams were folded."""
        return unfold(self.raw.get("events"))


class GroupRecord:
    """One task group as stored, with its per-status counters."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw

    @property
    def id(self) -> str:
        return self.raw["id"]

    tenant = TextField()

    @property
    def metadata(self) -> dict[str, Any] | None:
        return _json(self.raw.get("metadata"))

    created_ms = WholeField()

    @property
    def modified_ms(self) -> int:
        return _int(self.raw.get("modified_ms")) or self.created_ms

    num_task_runs = WholeField()

    @property
    def counts(self) -> dict[str, int]:
        """How many of its runs are in each status (statuses with none left out)."""
        return {k[2:]: int(v) for k, v in self.raw.items() if k.startswith(COUNT_PREFIX) and int(v) > 0}


COUNT_PREFIX = "c:"  # a group's `c:<status>` counters

# What a finished run is no longer read for, dropped as it ends (set_status): its
# lease, where it waited and with which limits, its retry schedule and counters, and
# modified_ms (then its finished_ms). Kept: priority_band and queue, which its TaskRun
# and the dashboard show, and worker (the dashboard names it and its host).
FINISHED_DROP = (
    "token",
    "lane",
    "timeout_s",
    "limits",
    "next_attempt_ms",
    "interruptions",
    "errors_n",
    "outputs_seq",
    "webhook_all",
    "delivery_seq",
    "modified_ms",
)

# What the wire shape of a run reads (wire.to_task_run): never the input or output.
WIRE = (
    "id",
    "tenant",
    "status",
    "processor",
    "metadata",
    "taskgroup_id",
    "created_ms",
    "modified_ms",
    "error",
    "errors",
    "attempts",
    "max_retries",
    "started_ms",
    "finished_ms",
    "next_attempt_ms",
    "warnings",
    "outputs_count",
    "outputs",
    "required_action",
    "asked_ms",
    "answer_deadline_ms",
)
# What a webhook delivery's payload, signature and trace need (webhooks/delivery.py).
DELIVERY = (*WIRE, "webhook", "output", "output_type", "webhook_body", "traceparent")
# What set_status (scripts/_lib.lua) reads of a run besides what changes: its links to
# the group, webhook and files, and what its events and metrics carry. Written into
# the scripts' prelude (scripts.py).
LINKS = (
    "taskgroup_id",
    "webhook",
    "webhook_all",
    "has_outputs",
    "processor",
    "started_ms",
    "next_attempt_ms",
    "created_ms",
    "attempts",
    "errors_n",
    "holds",
    "lane",
    "queue",
)


def load_runs(
    redis: Redis, run_ids: Iterable[str], fields: Sequence[str] | None = None, blobs: payload.Blobs | None = None
) -> list[RunRecord | None]:
    """The records of `run_ids`, in order, in one round trip (None where a run has
    expired); `fields`: only those (a projection above), else all; `blobs`: reads their
    offloaded payloads."""
    ids = list(run_ids)
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for run_id in ids:
        if fields is None:
            pipe.hgetall(keys.run(run_id))
        else:
            pipe.hmget(keys.run(run_id), fields)
    out: list[RunRecord | None] = []
    for reply in pipe.execute():
        if fields is not None:
            reply = {name: value for name, value in zip(fields, reply, strict=True) if value is not None}
        out.append(RunRecord(reply, blobs) if reply else None)
    return out


def load_groups(redis: Redis, group_ids: Iterable[str]) -> list[GroupRecord | None]:
    """The records of `group_ids`, in order, in one round trip (None where expired)."""
    ids = list(group_ids)
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for group_id in ids:
        pipe.hgetall(keys.group(group_id))
    return [GroupRecord(reply) if reply else None for reply in pipe.execute()]
