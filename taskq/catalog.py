"""The gateway's view of the processors workers serve, read from what they advertise;
and the one way taskq checks a value against a client's JSON Schema.

A client schema is untrusted. It resolves nothing outside itself (only local `#…`
refs; the registry has no retriever, so even a ref that slipped through fetches
nothing), its size and depth are bounded, its patterns run on RE2 (linear time, no
catastrophic backtracking) and `uniqueItems` is checked in O(n) by hashing canonical
JSON. Both the gateway (input) and the worker (output) go through `check`.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as SchemaValidationError
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from . import errors, keys
from .broker import Broker

MAX_SCHEMA_BYTES = 64 * 1024  # a client schema, serialised as JSON
MAX_SCHEMA_DEPTH = 32  # nesting of objects and arrays in a client schema
MAX_SCHEMA_KEYWORDS = 4096  # object keys in a client schema, all levels together
MAX_PATTERN_CHARS = 1024
REF_KEYWORDS = ("$ref", "$dynamicRef")


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
    """Raises ValidationFailed naming the first place where `value` breaks `schema`
    (or where `schema` itself is not allowed: see `check_schema`)."""
    validator = _compiled(schema, field)
    try:
        error = next(iter(validator.iter_errors(value)), None)
    except Unresolvable as exc:
        raise errors.ValidationFailed(f"{field}: the schema has a ref that cannot be resolved", {"field": field}) from exc
    if error is not None:
        where = ".".join(str(p) for p in (field, *error.absolute_path))
        raise errors.ValidationFailed(f"{where}: {error.message}", {"field": where, "reason": error.message})


def check_schema(schema: dict[str, Any], field: str) -> None:
    """Raises ValidationFailed (422) for a schema taskq will not use: invalid, too
    big or deep, a ref that leaves the schema, or a pattern RE2 cannot run."""
    _compiled(schema, field)


def _compiled(schema: dict[str, Any], field: str) -> Any:
    try:
        return _validator(_canonical(schema, field))
    except SchemaError as exc:
        raise errors.ValidationFailed(f"{field} is not a valid JSON Schema: {exc.message}", {"field": field}) from None


def _canonical(schema: dict[str, Any], field: str) -> str:
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_BYTES:
        raise errors.ValidationFailed(
            f"{field}: schema is {len(text)} bytes, more than the {MAX_SCHEMA_BYTES} allowed", {"field": field}
        )
    _walk(schema, field)
    return text


def _walk(schema: Any, field: str) -> None:
    """One pass over the schema: depth, keyword count, refs and patterns."""
    count = 0
    stack: list[tuple[Any, int, str]] = [(schema, 0, "")]
    while stack:
        node, depth, parent_key = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise errors.ValidationFailed(f"{field}: schema nests deeper than {MAX_SCHEMA_DEPTH} levels", {"field": field})
        if isinstance(node, list):
            stack.extend((item, depth + 1, "") for item in node)
            continue
        if not isinstance(node, dict):
            continue
        count += len(node)
        if count > MAX_SCHEMA_KEYWORDS:
            raise errors.ValidationFailed(f"{field}: schema has more than {MAX_SCHEMA_KEYWORDS} keywords", {"field": field})
        # Under `properties` (and friends) keys are names, not keywords.
        naming = parent_key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
        for key, value in node.items():
            if not naming:
                _check_keyword(key, value, field)
            if naming and parent_key == "patternProperties":
                _check_pattern(key, field)
            stack.append((value, depth + 1, "" if naming else key))


def _check_keyword(key: str, value: Any, field: str) -> None:
    if key in REF_KEYWORDS and isinstance(value, str) and not value.startswith("#"):
        raise errors.ValidationFailed(
            f"{field}: {key} {value!r} is not allowed: only local '#/…' refs", {"field": field, "ref": value}
        )
    if key == "pattern" and isinstance(value, str):
        _check_pattern(value, field)


def _check_pattern(pattern: str, field: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise errors.ValidationFailed(f"{field}: pattern longer than {MAX_PATTERN_CHARS} characters", {"field": field})
    try:
        _regex(pattern)
    except re2.error as exc:
        raise errors.ValidationFailed(
            f"{field}: pattern {pattern!r} is not supported (RE2 syntax, no lookaround or backreferences): {exc}",
            {"field": field, "pattern": pattern},
        ) from None


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    options = re2.Options()
    options.max_mem = 8 << 20
    return re2.compile(pattern, options)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[SchemaValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield SchemaValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator[SchemaValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        compiled = _regex(pattern)
        for k, v in instance.items():
            if compiled.search(k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _unique_items(validator: Any, unique: bool, instance: Any, schema: dict[str, Any]) -> Iterator[SchemaValidationError]:
    if not (unique and validator.is_type(instance, "array")):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_normal(item), sort_keys=True, separators=(",", ":"))
        if key in seen:
            yield SchemaValidationError(f"{instance!r:.200} has non-unique elements")
            return
        seen.add(key)


def _normal(value: Any) -> Any:
    """JSON Schema equality: 1 == 1.0, but true != 1."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _no_retrieval(uri: str) -> Any:
    raise NoSuchResource(uri)


# No retriever that reaches anything: a non-local ref resolves to nothing.
_REGISTRY: Registry = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]

Validator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties, "uniqueItems": _unique_items},
)


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Validator(schema, registry=_REGISTRY)
