"""Flow control as a processor declares it: concurrency caps, rate limits, keys and
named limits shared by many processors. The lanes and the claim step (see
docs/flow-control.md) hold them across every worker on every machine.

    OPENAI = Limit("openai", rate_limit="500/m", concurrency=50)   # one budget, by name
    OPENAI_TPM = Limit("openai-tpm", rate_limit="90000/m")

    @task(name="research", limits=[OPENAI, OPENAI_TPM.cost("input.max_tokens")])
    def research(inp): ...          # raise RateLimited(retry_after=30) on a 429

    @task(name="crawl", concurrency=2, rate_limit="10/s", key="input.domain")
    def crawl(inp): ...             # at most 2 at once and 10 a second *per domain*

A rate limit is a GCRA (generic cell rate algorithm, the smooth token bucket): "R/p"
admits one unit every p/R, and `burst` units at once after a quiet spell (default 1,
so never more than R starts in any window of length p, plus one). A run may weigh
more than one unit (`cost`): it is admitted when the bucket is full enough, and its
weight is then owed, so the next runs wait longer: the average rate holds.

Every limit has an id, its state's name in Redis: `n:<name>` for a named Limit,
`p:<processor>` for a processor's own (with `:<key value>` when it has a key), and
`t:<tenant>` for the deployment's per-tenant cap (TASKQ_TENANT_CONCURRENCY).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import LimitDeclarationError, RateLimited, ValidationFailed

_RATE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*")
_PERIOD_S = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# Where a key or a cost is read from: the run's input or its metadata, a dotted path.
_PATH = re.compile(r"(input|metadata)(\.[A-Za-z0-9_-]+)+|input")
MAX_KEY_CHARS = 200

__all__ = ["Budget", "Declared", "Limit", "LimitUse", "Rate", "RateLimited", "budget"]


@dataclass(frozen=True)
class Rate:
    """`units` per `period_s`: "500/m", "10/s", "1000/h", "3/10s"."""

    units: int
    period_s: float

    @classmethod
    def parse(cls, text: str, what: str) -> Rate:
        m = _RATE.fullmatch(text)
        if not m or int(m.group(1)) < 1:
            raise LimitDeclarationError(
                f"{what}: rate_limit {text!r} is not of the form 'N/s', 'N/m', 'N/h', 'N/d' or 'N/10s' (N >= 1)"
            )
        return cls(int(m.group(1)), int(m.group(2) or 1) * _PERIOD_S[m.group(3)])

    @property
    def interval_ms(self) -> float:
        """The time one unit takes to come back."""
        return self.period_s * 1000 / self.units

    def __str__(self) -> str:
        return f"{self.units}/{self.period_s:g}s"


@dataclass(frozen=True)
class Limit:
    """A budget shared by name by every processor that lists it in `limits=[...]`, on
    every worker: at most `concurrency` units in flight, at most `rate_limit` units
    started per period (`burst` of them at once). Declared once per process; two
    processes that declare one name with different budgets refuse to start."""

    name: str
    rate_limit: str | None = None
    concurrency: int | None = None
    burst: int = 1

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise LimitDeclarationError(f"Limit name {self.name!r}: use 1-100 letters, digits, '_', '.', ':' or '-'")
        budget(self.name, self.rate_limit, self.concurrency, self.burst)

    def cost(self, units: int | str) -> LimitUse:
        """This limit, with each run weighing `units` (a number, or a path such as
        "input.max_tokens" read from each run's input or metadata)."""
        return LimitUse(self, units)

    @property
    def id(self) -> str:
        return f"n:{self.name}"


@dataclass(frozen=True)
class LimitUse:
    limit: Limit
    units: int | str = 1


@dataclass(frozen=True)
class Budget:
    """What a limit allows: checked by the claim step for every run that holds it."""

    concurrency: int = 0  # units in flight at once; 0 = no cap
    rate: Rate | None = None
    burst: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "interval_ms": self.rate.interval_ms if self.rate else 0,
            "burst": self.burst,
            "rate": str(self.rate) if self.rate else None,
        }


def budget(what: str, rate_limit: str | None, concurrency: int | None, burst: int = 1) -> Budget:
    """The budget of a declaration; LimitDeclarationError naming `what` when it is not one."""
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise LimitDeclarationError(f"{what}: concurrency must be a whole number >= 1, not {concurrency!r}")
    if not isinstance(burst, int) or burst < 1:
        raise LimitDeclarationError(f"{what}: burst must be a whole number >= 1, not {burst!r}")
    rate = Rate.parse(rate_limit, what) if rate_limit is not None else None
    if rate is None and concurrency is None:
        raise LimitDeclarationError(f"{what}: a limit needs a rate_limit, a concurrency, or both")
    return Budget(concurrency or 0, rate, burst)


def check_path(path: str, what: str) -> str:
    """`key=` and `cost=` paths: input, input.<name>..., metadata.<name>..."""
    if not isinstance(path, str) or not _PATH.fullmatch(path) or path == "metadata":
        raise LimitDeclarationError(
            f"{what}: {path!r} is not a key path: use 'input', 'input.<field>[.<field>...]' or 'metadata.<name>'"
        )
    return path


def read_path(path: str, input: Any, metadata: dict[str, Any] | None, field_name: str) -> Any:
    """The value at `path` of a run's input or metadata; a 422 naming `field_name` and
    the path when it is not there."""
    head, *rest = path.split(".")
    value: Any = input if head == "input" else (metadata or {})
    for part in rest:
        if not isinstance(value, dict) or part not in value:
            raise ValidationFailed(
                f"{field_name}: the processor's limits are keyed by {path}, which this run does not have",
                {"field": path, "reason": "missing"},
            )
        value = value[part]
    return value


def key_value(path: str, input: Any, metadata: dict[str, Any] | None) -> str:
    """A run's key, as text (a JSON value other than a string is its JSON)."""
    value = read_path(path, input, metadata, path)
    if isinstance(value, dict | list) or value is None:
        raise ValidationFailed(f"{path}: a limit key must be a string, number or boolean", {"field": path})
    text = value if isinstance(value, str) else json.dumps(value)
    if not text or len(text) > MAX_KEY_CHARS:
        raise ValidationFailed(f"{path}: a limit key must have 1-{MAX_KEY_CHARS} characters", {"field": path})
    return text


def units_value(units: int | str, input: Any, metadata: dict[str, Any] | None) -> int:
    """How many units of a limit one run weighs (at least 1)."""
    if isinstance(units, int):
        return max(1, units)
    value = read_path(units, input, metadata, units)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValidationFailed(f"{units}: a limit's cost must be a number >= 0", {"field": units})
    return max(1, math.ceil(value))


@dataclass
class Declared:
    """A processor's flow control, as workers advertise it in its spec."""

    own: Budget | None = None  # the processor's own concurrency / rate_limit
    key: str | None = None  # input.<path> or metadata.<name>: own limit and lanes per key value
    shared: list[tuple[str, Budget, int | str]] = field(default_factory=list)  # (name, budget, units)

    def to_json(self) -> dict[str, Any]:
        return {
            "own": self.own.to_json() if self.own else None,
            "key": self.key,
            "shared": [{"name": n, "budget": b.to_json(), "units": u} for n, b, u in self.shared],
        }
