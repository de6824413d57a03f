"""The gateway's view of the processors workers serve, read from what they advertise;
and the one way taskq checks a value against a client's JSON Schema.

A client schema is untrusted, and the work it can cause is bounded twice: when it is
accepted (schema_limits: its document, local refs only, its size with every ref
inlined, RE2 patterns) and while it is evaluated (schema_budget: a budget of steps
per check, RE2 and linear-time keywords). Every place that takes a client schema
goes through `check_schema` / `check`: the gateway (task_spec input and output
schemas, processors' advertised schemas), the worker (a run's output_schema) and
`ask()` (its schema, and the answer to it).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable

from . import errors, keys, schema_budget, schema_limits
from .broker import Broker

# One request, one budget: `with catalog.budget(): …` makes every check inside share
# one budget of schema_budget.MAX_SCHEMA_STEPS (a group add checks up to 1,000 inputs).
budget = schema_budget.budget


class Catalog:
    """Processor specs from `taskq:processors`, re-read at most every
    `processor_cache_s` (and at once on a miss), so a new worker's processors are
    accepted without restarting the gateway."""

    def __init__(self, broker: Broker, local: dict[str, dict[str, Any]] | None = None) -> None:
        self._broker = broker
        self._local = local or {}
        self._specs: dict[str, dict[str, Any]] = {}
        self._read_at = 0.0
        self._lock = threading.Lock()

    def get(self, name: str) -> dict[str, Any]:
        spec = self._local.get(name) or self._current().get(name)
        if spec is None:
            spec = self._refresh().get(name)
        if spec is None:
            known = sorted(self._specs)
            raise errors.ValidationFailed(
                f"unknown processor {name!r}; known processors: {', '.join(known) or 'none (is a worker running?)'}",
                {"field": "processor", "known": known},
            )
        return spec

    def _current(self) -> dict[str, dict[str, Any]]:
        if time.monotonic() - self._read_at > self._broker.settings.processor_cache_s:
            return self._refresh()
        return self._specs

    def _refresh(self) -> dict[str, dict[str, Any]]:
        raw = self._broker.redis.hgetall(keys.PROCESSORS)
        with self._lock:
            self._specs = {name: json.loads(spec) for name, spec in raw.items()}
            self._read_at = time.monotonic()
        return self._specs


def check(value: Any, schema: Any, field: str, *, max_bytes: int = 1 << 20) -> None:
    """Raises ValidationFailed naming the first place where `value` breaks `schema`,
    or SchemaRefused where `schema` itself is not allowed (see `check_schema`) or its
    evaluation runs past its budget: schema_budget.MAX_SCHEMA_STEPS for each MiB of
    `max_bytes`, the most `value` may be (a request body by default), unless the check
    is made inside `budget()`."""
    accepted = _accepted(schema, field)
    steps = schema_budget.steps_for(max_bytes)
    try:
        error = schema_budget.first_error(accepted.validator, accepted.regexes, value, steps)
    except errors.SchemaRefused as exc:
        raise _named(exc, field) from None
    except RecursionError:
        # A ref cycle that never moves into the instance, or an instance nested
        # deeper than Python's stack: stopped like a budget, not a 500.
        raise errors.SchemaRefused(
            f"{field}: the schema's evaluation exceeded its budget (it nests deeper than Python's stack allows)",
            {"field": field},
        ) from None
    except Unresolvable as exc:
        raise errors.SchemaRefused(f"{field}: the schema has a ref that cannot be resolved", {"field": field}) from exc
    if error is not None:
        where = ".".join(str(p) for p in (field, *error.absolute_path))
        raise errors.ValidationFailed(f"{where}: {error.message}", {"field": where, "reason": error.message})


def check_schema(schema: Any, field: str) -> None:
    """Raises SchemaRefused (422) for a schema taskq will not use: invalid, too big or
    deep, a ref that leaves the schema or points at nothing in it, too big with its
    refs inlined, or a pattern RE2 cannot run."""
    _accepted(schema, field)


def _accepted(schema: Any, field: str) -> schema_limits.Accepted:
    text = schema_limits.canonical(schema, field)
    try:
        return schema_limits.accept(text)
    except SchemaError as exc:
        raise errors.SchemaRefused(f"{field} is not a valid JSON Schema: {exc.message}", {"field": field}) from None
    except errors.SchemaRefused as exc:
        raise _named(exc, field) from None


def _named(exc: errors.SchemaRefused, field: str) -> errors.SchemaRefused:
    """`exc`, which names no field, naming `field`."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    return errors.SchemaRefused(f"{field}: {exc.message}", {**detail, "field": field})
