"""Processors: the named pieces of work that workers serve.

    @task(name="research", queue="default", retries=3, timeout=600)
    def research(inp: CompanyInput) -> CompanyOutput: ...

The input arrives as the annotated pydantic model (or the raw dict / str); the
return value is validated against the return annotation and stored as the output.
Workers advertise each processor's spec in Redis (`taskq:processors`) so the gateway
can check names and inputs without importing user code.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from . import client, keys
from .errors import OutputInvalid
from .settings import Settings

if TYPE_CHECKING:
    from redis import Redis

    from .broker import Broker
    from .client import RunHandle

REGISTRY: dict[str, Processor] = {}


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
    _input_adapter: TypeAdapter[Any] | None = field(default=None, repr=False)
    _output_adapter: TypeAdapter[Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
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
    ) -> RunHandle:
        """Enqueues a run straight from Python: the same record, statuses and webhooks
        as a run made over HTTP. Returns a handle that can wait for the result."""
        if isinstance(input, BaseModel):
            input = input.model_dump(mode="json")
        return client.put(self.name, input, metadata=metadata, webhook=webhook, broker=broker, spec=self.spec)


def task(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int | None = None,
    timeout: int | None = None,
    retry_on: Iterable[type[BaseException]] = (Exception,),
) -> Any:
    """Declares a processor. Usable bare (`@task`) or with options (`@task(name=...)`)."""

    def decorate(fn: Callable[..., Any]) -> Processor:
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        proc = Processor(
            name=name or fn.__name__,
            func=fn,
            queue=queue,
            retries=retries,
            timeout_s=timeout,
            retry_on=tuple(retry_on),
            input_type=hints.get(params[0]) if params else None,
            output_type=hints.get("return"),
        )
        REGISTRY[proc.name] = proc
        return proc

    return decorate(func) if func is not None else decorate


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
