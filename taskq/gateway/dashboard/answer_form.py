"""The form that answers a run's question (action.py) from its page, drawn from the
question's schema: one field per property of a flat object of plain values (or one
field for a plain value), else a JSON text area filled with a skeleton of the
answer. What is posted back is read into the answer here; the schema check itself is
action.answer's, as for the API."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

from ... import errors

PLAIN = ("string", "number", "integer", "boolean")
WHOLE = ""  # the name of the one field of a plain-value answer


@dataclass
class FormField:
    name: str  # a property's name, or WHOLE
    kind: str  # one of PLAIN
    required: bool
    choices: list[Any] | None = None  # the schema's enum: picked by index
    description: str = ""

    @property
    def input_name(self) -> str:
        return f"f.{self.name}"


@dataclass
class AnswerForm:
    fields: list[FormField] | None  # None: the answer is written as JSON
    skeleton: str  # JSON of an answer shaped as the schema asks, to edit


def form_for(schema: dict[str, Any]) -> AnswerForm:
    return AnswerForm(_fields(schema), json.dumps(skeleton(schema), indent=2, ensure_ascii=False))


def _fields(schema: dict[str, Any]) -> list[FormField] | None:
    if _plain(schema):
        return [_field(WHOLE, schema, True)]
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict) or not properties:
        return None
    if not all(_plain(p) for p in properties.values()):
        return None
    required = set(schema.get("required") or [])
    return [_field(name, p, name in required) for name, p in properties.items()]


def _plain(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    enum = schema.get("enum")
    if enum is not None:
        return isinstance(enum, list) and bool(enum) and all(not isinstance(v, dict | list) for v in enum)
    return schema.get("type") in PLAIN


def _field(name: str, schema: dict[str, Any], required: bool) -> FormField:
    kind = schema.get("type") if schema.get("type") in PLAIN else "string"
    return FormField(name, str(kind), required, schema.get("enum"), str(schema.get("description") or ""))


def skeleton(schema: Any) -> Any:
    """An answer of the shape `schema` asks for: its default, its first choice, or an
    empty value of its type (an object with each of its properties)."""
    if not isinstance(schema, dict):
        return None
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or (kind is None and "properties" in schema):
        return {name: skeleton(p) for name, p in (schema.get("properties") or {}).items()}
    return {"array": [], "string": "", "number": 0, "integer": 0, "boolean": False}.get(str(kind))


def read(schema: dict[str, Any], form: MultiDict[str, str]) -> Any:
    """The answer the form posted: its fields as typed values, or its JSON. A value
    that is not of its field's type (or not JSON) is a ValidationFailed naming it."""
    fields = _fields(schema)
    if fields is None:
        try:
            return json.loads(form.get("answer", ""))
        except ValueError as exc:
            raise errors.ValidationFailed(f"the answer is not JSON: {exc}", {"field": "input"}) from None
    values = {f.name: _value(f, form.get(f.input_name, "")) for f in fields}
    if fields[0].name == WHOLE:
        return values[WHOLE]
    return {name: value for name, value in values.items() if value is not _OMITTED}


_OMITTED = object()


def _value(field: FormField, raw: str) -> Any:
    """A field's typed value; _OMITTED for an optional field left empty."""
    where = ".".join(p for p in ("input", field.name) if p)
    if raw == "" and not (field.kind == "string" and field.required and field.choices is None):
        return _OMITTED if field.name else None
    if field.choices is not None:
        try:
            return field.choices[int(raw)]
        except (ValueError, IndexError):
            raise errors.ValidationFailed(f"{where}: not one of the choices", {"field": where}) from None
    try:
        if field.kind == "boolean":
            return {"true": True, "false": False}[raw]
        if field.kind == "integer":
            return int(raw)
        if field.kind == "number":
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
    except (KeyError, ValueError):
        raise errors.ValidationFailed(f"{where}: {raw!r} is not a {field.kind}", {"field": where}) from None
    return raw
