"""How taskq evaluates a client JSON Schema: jsonschema's Draft 2020-12 validator
with every keyword spending from a step budget, and the keywords jsonschema runs in
a way a client could make unbounded (Python `re` on client patterns, O(n²)
compares) done here with RE2 and sets.

A step is about a microsecond of plain keyword work: a keyword evaluation costs one,
plus one per item of its value when that is an array or an object (a compare, or a
subschema), plus one per item of the instance for the keywords that go through the
instance's items or properties; each validator made for a subschema (a descend)
costs `DESCEND_STEPS`; each regex search costs one, plus one per KiB it scans; each error
costs one, plus one per 256 characters of its message (which quotes the instance). One
evaluation may spend `MAX_SCHEMA_STEPS`; past it, SchemaRefused. The count lives in a
contextvar, so it belongs to one evaluation in one thread, greenlet or asyncio task;
`budget()` makes several evaluations share one (a group add: one request, one budget).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from . import errors

# Steps (see above) one evaluation, or one budget() block, may spend for each MiB the
# checked value may have (a request body: 1 MiB; a run's output: TASKQ_MAX_OUTPUT_BYTES).
MAX_SCHEMA_STEPS = 1_000_000
DESCEND_STEPS = 3  # a validator made for a subschema costs about three plain keywords
# Keywords whose work grows with the instance's items or properties.
_THROUGH_INSTANCE = frozenset(
    (
        "items",
        "prefixItems",
        "contains",
        "unevaluatedItems",
        "uniqueItems",
        "propertyNames",
        "patternProperties",
        "additionalProperties",
        "unevaluatedProperties",
    )
)
PATTERN_MAX_MEM = 2 << 20  # RE2 memory for one pattern: program and DFA cache together

Keyword = Callable[[Any, Any, Any, Any], Any]


@dataclass(slots=True)
class _Budget:
    size: int
    left: int


@dataclass(slots=True)
class _Evaluation:
    budget: _Budget
    regexes: Mapping[str, Any]


_evaluation: ContextVar[_Evaluation | None] = ContextVar("taskq_schema_evaluation", default=None)
_shared: ContextVar[_Budget | None] = ContextVar("taskq_schema_budget", default=None)
_SIZED = (list, dict)


def steps_for(max_bytes: int) -> int:
    """The budget of a check whose value may be up to `max_bytes`."""
    return MAX_SCHEMA_STEPS * max(1, -(-max_bytes >> 20))


def first_error(validator: Any, regexes: Mapping[str, Any], instance: Any, steps: int) -> ValidationError | None:
    """The first place where `instance` breaks the validator's schema, spending at most
    `steps` (or from the enclosing `budget()`); `regexes` are the schema's patterns,
    compiled. Raises SchemaRefused past the budget."""
    token = _evaluation.set(_Evaluation(_shared.get() or _Budget(steps, steps), regexes))
    try:
        return next(iter(validator.iter_errors(instance)), None)
    finally:
        _evaluation.reset(token)


@contextlib.contextmanager
def budget(steps: int = MAX_SCHEMA_STEPS) -> Iterator[None]:
    """Every evaluation inside shares one budget of `steps` (the outermost, if nested)."""
    if _shared.get() is not None:
        yield
        return
    token = _shared.set(_Budget(steps, steps))
    try:
        yield
    finally:
        _shared.reset(token)


def spend(steps: int) -> None:
    evaluation = _evaluation.get()
    if evaluation is not None:
        _take(evaluation.budget, steps)


def _take(budget: _Budget, steps: int) -> None:
    budget.left -= steps
    if budget.left < 0:
        raise errors.SchemaRefused(f"the schema's evaluation exceeded its budget of {budget.size:,} steps")


def _counted(name: str, keyword: Keyword) -> Keyword:
    through_instance = name in _THROUGH_INSTANCE

    @functools.wraps(keyword)
    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        evaluation = _evaluation.get()
        if evaluation is not None:
            steps = 1
            if type(value) in _SIZED:
                steps += len(value)
            if through_instance and type(instance) in _SIZED:
                steps += len(instance)
            _take(evaluation.budget, steps)
        return keyword(validator, value, instance, schema)

    return counted


def _failed(error: ValidationError | None) -> bool:
    """Whether there is an error; an error evaluation goes on after (a failed anyOf
    branch, a `not`) is paid for: its message quotes the instance, so it costs more
    the bigger the instance is. (The first error nobody catches ends the check.)"""
    if error is None:
        return False
    spend(1 + (len(error.message) >> 8))
    return True


def compile_pattern(pattern: str) -> Any:
    """`pattern` as RE2 (linear time); raises re2.error for what RE2 cannot run."""
    options = re2.Options()
    options.max_mem = PATTERN_MAX_MEM
    return re2.compile(pattern, options)


def _regex(pattern: str) -> Any:
    evaluation = _evaluation.get()
    compiled = evaluation.regexes.get(pattern) if evaluation is not None else None
    return compiled if compiled is not None else compile_pattern(pattern)


def _searches(patterns: Any, keys: Any) -> int:
    return len(patterns) * sum(1 + (len(k) >> 10) for k in keys)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string"):
        spend(len(instance) >> 10)
        if not _regex(pattern).search(instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    spend(_searches(patterns, instance))
    for pattern, subschema in patterns.items():
        compiled = _regex(pattern)
        for k, v in instance.items():
            if compiled.search(k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = [_regex(p) for p in schema.get("patternProperties", {})]
    spend(_searches(patterns, instance))
    extras = [k for k in instance if k not in named and not any(p.search(k) for p in patterns)]
    if validator.is_type(extra, "object"):
        for k in extras:
            yield from validator.descend(instance[k], extra, path=k)
    elif not extra and extras:
        if patterns:
            joined = ", ".join(repr(k) for k in sorted(extras))
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {regexes}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({_listed(sorted(extras))} unexpected)")


def _unevaluated_properties(validator: Any, rest: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    bad = [
        k
        for k in instance
        if k not in evaluated and not _valid(iter(validator.descend(instance[k], rest, path=k, schema_path=k)))
    ]
    if bad and rest is False:
        yield ValidationError(f"Unevaluated properties are not allowed ({_listed(sorted(bad))} unexpected)")
    elif bad:
        yield ValidationError(
            f"Unevaluated properties are not valid under the given schema ({_listed(bad)} unevaluated and invalid)"
        )


def _unevaluated_items(validator: Any, rest: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    evaluated = _evaluated_indexes(validator, instance, schema)
    left = [item for i, item in enumerate(instance) if i not in evaluated]
    if left:
        yield ValidationError(f"Unevaluated items are not allowed ({_listed(left)} unexpected)")


def _listed(extras: list[Any]) -> str:
    return f"{', '.join(repr(e) for e in extras)} {'was' if len(extras) == 1 else 'were'}"


def _valid(errors_: Iterator[ValidationError]) -> bool:
    return not _failed(next(errors_, None))


def _referenced(validator: Any, schema: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """(validator, subschema) for each ref of `schema`, resolved."""
    for keyword in ("$ref", "$dynamicRef"):
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            yield validator.evolve(schema=resolved.contents, _resolver=resolved.resolver), resolved.contents


def _conditional(validator: Any, instance: Any, schema: dict[str, Any]) -> list[Any]:
    """The subschemas of if/then/else that apply to `instance`."""
    if "if" not in schema:
        return []
    if validator.evolve(schema=schema["if"]).is_valid(instance):
        return [schema["if"], *([schema["then"]] if "then" in schema else [])]
    return [schema["else"]] if "else" in schema else []


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> set[str]:
    """The keys of `instance` that `schema` evaluates in place (for
    unevaluatedProperties): jsonschema's walk, with RE2 and sets."""
    if isinstance(schema, bool):
        return set()
    spend(1 + len(instance))
    keys: set[str] = set()
    for sub_validator, sub in _referenced(validator, schema):
        keys |= _evaluated_keys(sub_validator, instance, sub)
    if isinstance(schema.get("properties"), dict):
        keys |= schema["properties"].keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (sub := schema.get(keyword)) is not None:
            keys |= {k for k, v in instance.items() if _valid(validator.descend(v, sub))}
    if patterns := schema.get("patternProperties"):
        spend(_searches(patterns, instance))
        compiled = [_regex(p) for p in patterns]
        keys |= {k for k in instance if any(p.search(k) for p in compiled)}
    for name, sub in schema.get("dependentSchemas", {}).items():
        if name in instance:
            keys |= _evaluated_keys(validator, instance, sub)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(keyword, []):
            if _valid(validator.descend(instance, sub)):
                keys |= _evaluated_keys(validator, instance, sub)
    for sub in _conditional(validator, instance, schema):
        keys |= _evaluated_keys(validator, instance, sub)
    return keys


def _evaluated_indexes(validator: Any, instance: list[Any], schema: Any) -> set[int]:
    """The indexes of `instance` that `schema` evaluates in place (for
    unevaluatedItems): jsonschema's walk, with sets."""
    if isinstance(schema, bool):
        return set()
    spend(1 + len(instance))
    if "items" in schema:
        return set(range(len(instance)))
    indexes: set[int] = set()
    for sub_validator, sub in _referenced(validator, schema):
        indexes |= _evaluated_indexes(sub_validator, instance, sub)
    indexes |= set(range(min(len(schema.get("prefixItems", [])), len(instance))))
    for sub in _conditional(validator, instance, schema):
        indexes |= _evaluated_indexes(validator, instance, sub)
    for keyword in ("contains", "unevaluatedItems"):
        if keyword in schema:
            check = validator.evolve(schema=schema[keyword])
            indexes |= {i for i, item in enumerate(instance) if check.is_valid(item)}
    for keyword in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(keyword, []):
            if _valid(validator.descend(instance, sub)):
                indexes |= _evaluated_indexes(validator, instance, sub)
    return indexes


def _any_of(validator: Any, subschemas: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    """As jsonschema's, but a failing branch stops at its first error, and the error
    keeps no `context` (taskq reports the message and the path; a context makes a
    reference cycle per error, left for the garbage collector)."""
    for index, subschema in enumerate(subschemas):
        if not _failed(next(iter(validator.descend(instance, subschema, schema_path=index)), None)):
            return
    yield ValidationError(f"{instance!r} is not valid under any of the given schemas")


def _one_of(validator: Any, subschemas: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    """As jsonschema's, with the changes of `_any_of`."""
    valid = [
        subschema
        for index, subschema in enumerate(subschemas)
        if not _failed(next(iter(validator.descend(instance, subschema, schema_path=index)), None))
    ]
    if not valid:
        yield ValidationError(f"{instance!r} is not valid under any of the given schemas")
    elif len(valid) > 1:
        reprs = ", ".join(repr(each) for each in (*valid[1:], valid[0]))
        yield ValidationError(f"{instance!r} is valid under each of {reprs}")


def _unique_items(validator: Any, unique: bool, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """O(n) by hashing canonical JSON, where jsonschema compares pairs."""
    if not (unique and validator.is_type(instance, "array")):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_normal(item), sort_keys=True, separators=(",", ":"))
        if key in seen:
            yield ValidationError(f"{instance!r:.200} has non-unique elements")
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


_OURS: dict[str, Keyword] = {
    "anyOf": _any_of,
    "oneOf": _one_of,
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "unevaluatedProperties": _unevaluated_properties,
    "unevaluatedItems": _unevaluated_items,
    "uniqueItems": _unique_items,
}

Validator = validators.extend(
    Draft202012Validator,
    {name: _counted(name, keyword) for name, keyword in {**Draft202012Validator.VALIDATORS, **_OURS}.items()},
)
_evolve = Validator.evolve
_is_valid = Validator.is_valid


def _counted_evolve(self: Any, **changes: Any) -> Any:
    spend(DESCEND_STEPS)
    return _evolve(self, **changes)


def _counted_is_valid(self: Any, instance: Any, _schema: Any = None) -> bool:
    if _schema is not None:
        return bool(_is_valid(self, instance, _schema))
    return not _failed(next(self.iter_errors(instance), None))


# Counted on this class only, whichever keyword asks: every descend into a subschema
# (a keyword's, a ref's) makes a validator through `evolve`; `not`, `if` and
# `contains` go through `is_valid`, dropping the error they get.
Validator.evolve = _counted_evolve
Validator.is_valid = _counted_is_valid
