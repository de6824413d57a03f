"""JSON that comes in and goes out, and stays JSON. A request's data becomes a wire
model through `parse` (400 for a body that is not a JSON object, 422 naming the field
that does not fit).

NaN and the infinities are not JSON (RFC 8259), and a number literal too large for a
double (`1e400`, or 309 digits before the point) parses as one. Stored, they would
come back as invalid JSON on every read. So a body is parsed once, refusing the NaN
and Infinity tokens (400, `body_json`); what taskq keeps of a request is serialised by
`request_json`, which refuses a non-finite number with a 422 naming its field (however
it got there: an overflowing literal, or a Python float from `.put()`); and everything
else written to Redis or the wire goes through `dumps`, which never writes one.
Checking at the serialisation that happens anyway costs nothing: no second parse and
no scan of the body (docs/security.md has the measurements).
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError

from .errors import BadRequest, ValidationFailed

NOT_FINITE = "numbers must be finite (NaN, infinities and numbers too large for a double are not kept)"


def body_json(raw: bytes | str) -> Any:
    """A request body, parsed in one pass; 400 unless it is JSON (RFC 8259)."""
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError:
        pass
    try:
        pydantic_core.from_json(raw)  # only to say why: a bad request costs the second parse
    except ValueError:
        raise BadRequest("request body must be a JSON object") from None
    raise BadRequest("request body must be valid JSON (NaN and Infinity are not JSON)")


def not_finite_at(value: Any, where: str = "") -> str | None:
    """The dotted path (under `where`) of a NaN or infinite float in `value` (dicts,
    lists, tuples and pydantic models, to any depth), or None."""
    if not _any_not_finite(value):
        return None  # the common case, without building a path for every item
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return path
        elif isinstance(item, dict | BaseModel):
            pairs = item.items() if isinstance(item, dict) else vars(item).items()
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in pairs)
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(item))
    return None


def _any_not_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, BaseModel):
            stack.extend(vars(item).values())
    return False


def dumps(value: Any, **kw: Any) -> str:
    """Compact JSON text of user data for Redis or the wire. A NaN or infinite float
    raises ValueError instead of being written as `NaN`/`Infinity`, which is not JSON."""
    kw.setdefault("separators", (",", ":"))
    return json.dumps(value, allow_nan=False, **kw)


def request_json(value: Any, field: str) -> str:
    """`dumps` for what a request (or a Python caller) gave: a NaN or infinite number
    is a 422 naming where it is under `field`."""
    try:
        return dumps(value)
    except ValueError:
        path = not_finite_at(value, field)
        if path is None:
            raise
        raise ValidationFailed(f"{path}: {NOT_FINITE}", {"field": path}) from None


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, where: str = "") -> M:
    """Validates request data (a raw JSON body, or Python objects): a body that is not
    a JSON object is a 400, and so is one with NaN or Infinity, which are not JSON; a
    field that does not fit is a 422 naming the field and the reason."""
    try:
        return model.model_validate(body_json(data) if isinstance(data, bytes | str) else data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "model_type" and not first["loc"]:
            raise BadRequest("request body must be a JSON object") from None
        path = where + ".".join(str(p) for p in first["loc"])
        problems = [
            {"field": where + ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()[:20]
        ]
        raise ValidationFailed(f"{path or 'body'}: {first['msg']}", {"errors": problems}) from None
