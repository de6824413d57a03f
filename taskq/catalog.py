"""The gateway's view of the processors workers serve, read from what they advertise."""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from . import errors, keys
from .broker import Broker


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


def check(value: Any, schema: dict[str, Any], field: str) -> None:
    """Raises ValidationFailed naming the first place where `value` breaks `schema`."""
    error = next(iter(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value)), None)
    if error is not None:
        where = ".".join(str(p) for p in (field, *error.absolute_path))
        raise errors.ValidationFailed(f"{where}: {error.message}", {"field": where, "reason": error.message})


def check_schema(schema: dict[str, Any], field: str) -> None:
    try:
        _validator(json.dumps(schema, sort_keys=True))
    except SchemaError as exc:
        raise errors.ValidationFailed(f"{field} is not a valid JSON Schema: {exc.message}", {"field": field}) from exc


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
