"""One attempt's body, wherever it runs (a thread, the event loop, a child
process): parse the input, call the processor, shape and check its output, and
say what happened as an `Outcome`. Whether a failure is retried is not decided
here: `finish.lua`'s `retry_or_fail` is the one retry rule; this only says
whether the failure is of a kind that may be retried.

The traceback of a failure goes to the worker's log; the run's stored error has
`{type, message, attempt}` only (errors never carry server paths)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .. import catalog
from ..broker import Broker
from ..context import CurrentRun, _current
from ..errors import (
    ActionRequired,
    OutputInvalid,
    RateLimited,
    RunInterrupted,
    SchemaRefused,
    StorageUnavailable,
    TaskqError,
)
from ..jsontext import NOT_FINITE, dumps, not_finite_at
from ..outputs import payloads
from ..processor import Processor
from ..record import RunRecord

log = logging.getLogger("taskq.worker")


@dataclass
class Outcome:
    """What happened to an attempt: `what` is one of finish.lua's (completed, error,
    cancelled, shutdown, ratelimited, action_required) or `lost` (nothing to write: the lease is gone);
    `fields` are more fields for the run record (the output)."""

    what: str
    fields: dict[str, str | bytes] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    retryable: bool = False
    pause_ms: int = 0  # ratelimited: how long the limits it held pause

    @property
    def arg(self) -> str:
        """finish.lua's `arg`: '1' for a retryable error; a rate limit's pause in ms."""
        if self.what == "ratelimited":
            return str(self.pause_ms)
        return "1" if self.retryable else ""


def interrupted(record: RunRecord, reason: str, timeout_s: int) -> Outcome:
    """The outcome of an attempt stopped from outside, by `reason` (timeout,
    cancelled, shutdown, lost)."""
    if reason == "timeout":
        return timed_out(record, timeout_s)
    if reason in ("cancelled", "lost"):
        return Outcome(reason)
    return Outcome("shutdown")


def failed(record: RunRecord, exc: BaseException | None, *, retryable: bool, message: str | None = None) -> Outcome:
    kind = type(exc).__name__ if exc is not None else "TimeoutError"
    message = message or f"{kind}: {exc}"
    error = {
        "ref_id": f"{record.id}.{record.attempts}",
        "message": message[:2000],
        "detail": {"type": kind, "message": message[:2000], "attempt": record.attempts},
    }
    return Outcome("error", error=error, retryable=retryable)


def timed_out(record: RunRecord, timeout_s: int) -> Outcome:
    return failed(record, None, retryable=True, message=f"timed out after {timeout_s} s")


def is_retryable(proc: Processor, exc: BaseException) -> bool:
    # The same input, output or schema fails the same way again (SchemaRefused: an
    # ask() whose schema taskq will not use).
    if isinstance(exc, OutputInvalid | ValidationError | SchemaRefused):
        return False
    return proc.is_retryable(exc)


def conclude(proc: Processor, record: RunRecord, value: Any, broker: Broker) -> Outcome:
    """The outcome of a processor that returned `value`."""
    max_output_bytes = broker.settings.max_output_bytes
    try:
        # Before shaping: a return type's serialiser would turn some into null unasked.
        if (where := not_finite_at(value, "output")) is not None:
            raise OutputInvalid(f"{where}: {NOT_FINITE}")
        kind, content = proc.shape_output(value)
        schema = record.output_schema
        if schema and kind == "json":
            try:
                catalog.check(content, schema, "output", max_bytes=max_output_bytes)
            except SchemaRefused as exc:
                raise OutputInvalid(f"the task's output_schema cannot be used: {exc.message}") from exc
            except TaskqError as exc:
                raise OutputInvalid(f"output does not match the task's output_schema: {exc.message}") from exc
        output = _output_json(content)
        if len(output) > max_output_bytes:
            raise OutputInvalid(f"output is {len(output)} bytes, over the limit of {max_output_bytes}")
    except OutputInvalid as exc:
        return failed(record, exc, retryable=False)
    try:
        return Outcome("completed", _output_fields(broker, record.id, kind, output))
    except Exception as exc:  # the output storage would not take it: retried as any failure is
        log.warning("run %s: could not store its output", record.id, exc_info=True)
        return failed(record, exc, retryable=True, message="could not store the output; retrying")


def _output_fields(broker: Broker, run_id: str, kind: str, output: str) -> dict[str, str | bytes]:
    """The fields that record the output: kept as payload.py says (written to the
    output storage now, if it goes there: the finisher deletes it if it is not kept)."""
    stored = payloads.store(broker, run_id, "output", output)
    fields: dict[str, str | bytes] = {"output_type": kind, "output": stored}
    if payloads.offloaded(stored):
        fields["has_outputs"] = "1"
    return fields


def _output_json(content: Any) -> str:
    """The output as stored: never NaN or an infinity (a serialiser may still make one)."""
    try:
        return dumps(content)
    except ValueError as exc:
        raise OutputInvalid(f"{not_finite_at(content, 'output') or 'output'}: {NOT_FINITE}") from exc


def rate_limited(record: RunRecord, exc: RateLimited) -> Outcome:
    """The outcome of a processor told "too many requests": the run waits again and
    every limit it held pauses for `retry_after`."""
    log.info("run %s attempt %d: rate limited; its limits pause %g s", record.id, record.attempts, exc.retry_after)
    return Outcome("ratelimited", pause_ms=int(exc.retry_after * 1000))


def asked(exc: ActionRequired) -> Outcome:
    """The outcome of a processor that asked a person (action.py): the run waits."""
    return Outcome("action_required", {"required_action": dumps(exc.required_action)})


def _begin(proc: Processor, record: RunRecord, broker: Broker) -> tuple[Any, CurrentRun] | Outcome:
    """The processor's input and the run's context; or the outcome when the input does
    not fit (not retried) or an offloaded payload cannot be read now (retried)."""
    record = payloads.bind(record, broker)
    try:
        inp = proc.parse_input(record.input)
        return inp, CurrentRun(record.id, record.attempts, broker, record.token, record.answers)
    except ValidationError as exc:
        return failed(record, exc, retryable=False)
    except StorageUnavailable as exc:
        return failed(record, exc, retryable=True)


def _raised(proc: Processor, record: RunRecord, exc: Exception) -> Outcome:
    log.info("run %s attempt %d raised", record.id, record.attempts, exc_info=exc)
    return failed(record, exc, retryable=is_retryable(proc, exc))


def call_sync(
    proc: Processor, record: RunRecord, broker: Broker, arm: Callable[[], None], disarm: Callable[[], None]
) -> Outcome:
    """Runs a plain processor in this thread. `arm`/`disarm` bracket the time it
    may be interrupted (by an exception raised in this thread); RunInterrupted
    escapes to the caller, which knows why it was sent."""
    begun = _begin(proc, record, broker)
    if isinstance(begun, Outcome):
        return begun
    inp, context = begun
    token = _current.set(context)
    try:
        try:
            arm()
            value = proc(inp)
        finally:
            try:
                disarm()
            finally:
                _current.reset(token)
    except RunInterrupted:
        raise
    except ActionRequired as exc:  # taskq/action.py: the run waits for a person
        return asked(exc)
    except RateLimited as exc:  # what it calls said 429: wait again, no retry spent
        return rate_limited(record, exc)
    except Exception as exc:
        return _raised(proc, record, exc)
    return conclude(proc, record, value, broker)


async def call_async(proc: Processor, record: RunRecord, broker: Broker) -> Outcome:
    """Runs an `async def` processor as this task; a cancel of the task escapes as
    asyncio.CancelledError to the caller, which knows why it was sent."""
    begun = _begin(proc, record, broker)
    if isinstance(begun, Outcome):
        return begun
    inp, context = begun
    _current.set(context)  # this task's own context
    try:
        value = await proc(inp)
    except (asyncio.CancelledError, RunInterrupted):
        raise
    except ActionRequired as exc:  # taskq/action.py: the run waits for a person
        return asked(exc)
    except RateLimited as exc:
        return rate_limited(record, exc)
    except Exception as exc:
        return _raised(proc, record, exc)
    return conclude(proc, record, value, broker)


def is_async(proc: Processor) -> bool:
    return asyncio.iscoroutinefunction(proc.func)
