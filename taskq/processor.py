"""Processors: the named pieces of work that workers serve.

    @task(name="research", queue="default", retries=3, timeout=600)
    def research(inp: CompanyInput) -> CompanyOutput: ...

The input arrives as the annotated pydantic model (or the raw dict / str); the
return value is validated against the return annotation and stored as the output.
Flow control (`limits`, `concurrency`, `rate_limit`, `key`), a default `priority` and
a `schedule` are declared here too (limits.py, schedule.py). Workers advertise each
processor's spec in Redis (`taskq:processors`) so the gateway can check names and
inputs, and place runs in their lanes, without importing user code.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from . import client, keys, limits
from .errors import ConfigurationError, OutputInvalid
from .limits import Declared, Limit, LimitUse
from .models import PRIORITY_NAMES
from .settings import Settings

if TYPE_CHECKING:
    from redis import Redis

    from .broker import Broker
    from .client import RunHandle

REGISTRY: dict[str, Processor] = {}
# A processor's name is part of its lanes' keys and wake-up channel: a plain word.
NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


@dataclass
class Processor:
    name: str
    func: Callable[..., Any]
    queue: str = "default"
    retries: int | None = None  # None: the deployment's default (3)
    timeout_s: int | None = None  # None: the deployment's default
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    input_type: Any = None
    output_type: Any = None
    flow: Declared = field(default_factory=Declared)  # its limits and key (limits.py)
    priority: str = "normal"  # its runs' priority unless a run says
    schedule: Any = None  # schedule.Schedule: when it runs by itself
    _input_adapter: TypeAdapter[Any] | None = field(default=None, repr=False)
    _output_adapter: TypeAdapter[Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ConfigurationError(f"processor name {self.name!r}: use 1-100 letters, digits, '_', '.' or '-'")
        if self.priority not in PRIORITY_NAMES:
            raise ConfigurationError(
                f"{self.name}: priority is one of {', '.join(PRIORITY_NAMES)}, not {self.priority!r}"
            )
        if self.input_type not in (None, inspect.Parameter.empty):
            self._input_adapter = TypeAdapter(self.input_type)
        if self.output_type not in (None, inspect.Signature.empty):
            self._output_adapter = TypeAdapter(self.output_type)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    @functools.cached_property
    def _spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue": self.queue,
            "retries": self.retries,
            "timeout_s": self.timeout_s,
            "input_schema": _schema(self._input_adapter),
            "output_schema": _schema(self._output_adapter),
            "flow": self.flow.to_json(),
            "priority": self.priority,
            "schedule": self.schedule.describe() if self.schedule else None,
        }

    def spec(self, settings: Settings) -> dict[str, Any]:
        """What workers advertise: enough for the gateway to check a request and write
        the run, the deployment's defaults filled in (the one place they are)."""
        spec = dict(self._spec)
        spec["retries"] = settings.default_retries if self.retries is None else self.retries
        spec["timeout_s"] = min(self.timeout_s or settings.default_timeout_s, settings.max_timeout_s)
        return spec

    def parse_input(self, raw: Any) -> Any:
        """The stored input as the function wants it; raises ValidationError."""
        return raw if self._input_adapter is None else self._input_adapter.validate_python(raw)

    def shape_output(self, value: Any) -> tuple[str, Any]:
        """(type, content) of the run's output: 'text' for a str, else 'json'."""
        if self._output_adapter is not None:
            try:
                value = self._output_adapter.validate_python(value)
            except ValidationError as exc:
                raise OutputInvalid(f"{self.name} returned output that does not fit its return type: {exc}") from exc
            value = self._output_adapter.dump_python(value, mode="json")
        elif isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, str):
            return "text", value
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise OutputInvalid(f"{self.name} returned a value that is not JSON: {exc}") from exc
        return "json", value

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry_on)

    def put(
        self,
        input: Any,
        *,
        metadata: dict[str, Any] | None = None,
        webhook: dict[str, Any] | None = None,
        broker: Broker | None = None,
        priority: str | None = None,
        run_at: datetime | None = None,
        delay_s: float | None = None,
    ) -> RunHandle:
        """Enqueues a run straight from Python: the same record, statuses and webhooks
        as a run made over HTTP. `priority` ("high", "normal", "low") orders it in its
        lane; `run_at` (an aware datetime) or `delay_s` keeps it queued until then.
        Returns a handle that can wait for the result."""
        if isinstance(input, BaseModel):
            input = input.model_dump(mode="json")
        return client.put(
            self.name,
            input,
            metadata=metadata,
            webhook=webhook,
            broker=broker,
            spec=self.spec,
            priority=priority,
            run_at=run_at,
            delay_s=delay_s,
        )


def task(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int | None = None,
    timeout: int | None = None,
    retry_on: Iterable[type[BaseException]] = (Exception,),
    limits: Iterable[Limit | LimitUse] = (),
    concurrency: int | None = None,
    rate_limit: str | None = None,
    key: str | None = None,
    priority: str = "normal",
    schedule: str | float | None = None,
    tz: str | None = None,
    schedule_input: Any = None,
) -> Any:
    """Declares a processor. Usable bare (`@task`) or with options (`@task(name=...)`).

    Flow control (docs/flow-control.md): `concurrency` and `rate_limit` cap this
    processor's runs across every worker, per value of `key` ("input.<path>" or
    "metadata.<name>") when given; `limits` lists named `Limit`s it shares with others
    (`Limit.cost(...)` when a run weighs more than one unit). `priority` is its runs'
    default. `schedule` (a five-field cron, UTC unless `tz`, or every N seconds) makes
    it run by itself, with `schedule_input` (docs/scheduling.md)."""

    def decorate(fn: Callable[..., Any]) -> Processor:
        from .schedule import Schedule  # schedule.py imports this module's Processor for its ticks

        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        proc_name = name or fn.__name__
        proc = Processor(
            name=proc_name,
            func=fn,
            queue=queue,
            retries=retries,
            timeout_s=timeout,
            retry_on=tuple(retry_on),
            input_type=hints.get(params[0]) if params else None,
            output_type=hints.get("return"),
            flow=_declared(proc_name, limits, concurrency, rate_limit, key),
            priority=priority,
            schedule=Schedule.parse(proc_name, schedule, tz, schedule_input) if schedule is not None else None,
        )
        REGISTRY[proc.name] = proc
        return proc

    return decorate(func) if func is not None else decorate


def _declared(
    name: str, uses: Iterable[Limit | LimitUse], concurrency: int | None, rate_limit: str | None, key: str | None
) -> Declared:
    """A processor's flow control, checked now: a bad declaration stops the import."""
    own = None
    if concurrency is not None or rate_limit is not None:
        own = limits.budget(name, rate_limit, concurrency)
    if key is not None:
        limits.check_path(key, f"{name}: key")
    shared = []
    for use in uses:
        use = use if isinstance(use, LimitUse) else LimitUse(use)
        if isinstance(use.units, str):
            limits.check_path(use.units, f"{name}: cost of {use.limit.name}")
        shared.append(
            (
                use.limit.name,
                limits.budget(use.limit.name, use.limit.rate_limit, use.limit.concurrency, use.limit.burst),
                use.units,
            )
        )
    return Declared(own=own, key=key, shared=shared)


def load_apps(modules: Iterable[str]) -> dict[str, Processor]:
    """Imports the TASKQ_APP modules (registering their @task processors) and the
    built-in ones; returns every processor this process serves."""
    importlib.import_module("taskq.processors")
    for module in modules:
        importlib.import_module(module)
    return dict(REGISTRY)


def advertise(redis: Redis, processors: Iterable[Processor], settings: Settings) -> None:
    """Publishes the processors' specs, the deployment's defaults filled in."""
    specs = {proc.name: json.dumps(proc.spec(settings)) for proc in processors}
    if specs:
        redis.hset(keys.PROCESSORS, mapping=specs)


def _schema(adapter: TypeAdapter[Any] | None) -> dict[str, Any] | None:
    if adapter is None:
        return None
    try:
        return adapter.json_schema()
    except Exception:  # a type pydantic cannot describe still runs; it just is not advertised
        return None
