"""The run record, parsed once at the edge: `RunRecord.from_hash()` turns the hash
`taskq:run:{id}` (see run.py for its fields) into typed values, so no module
re-parses `int(record.get(...) or 0)` on its own."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _int(value: str | None) -> int:
    return int(value) if value else 0


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


@dataclass(frozen=True)
class RunRecord:
    """One run as stored. Times are epoch ms (0 when not set); JSON fields are
    decoded on first use."""

    id: str
    status: str
    processor: str
    queue: str = "default"
    tenant: str = ""
    input_json: str = "null"
    attempts: int = 0
    interruptions: int = 0
    max_retries: int = 0
    timeout_s: int = 0
    token: str = ""
    taskgroup_id: str | None = None
    created_ms: int = 0
    modified_ms: int = 0
    started_ms: int = 0
    finished_ms: int = 0
    next_attempt_ms: int = 0
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_hash(cls, data: Mapping[str, str] | Sequence[str]) -> RunRecord:
        """From HGETALL's reply (a mapping), or a flat field/value list as the
        scripts return it (a later value of a field wins)."""
        if not isinstance(data, Mapping):
            data = dict(zip(data[::2], data[1::2]))
        return cls(
            id=data["id"],
            status=data.get("status", ""),
            processor=data.get("processor", ""),
            queue=data.get("queue") or "default",
            tenant=data.get("tenant", ""),
            input_json=data.get("input") or "null",
            attempts=_int(data.get("attempts")),
            interruptions=_int(data.get("interruptions")),
            max_retries=_int(data.get("max_retries")),
            timeout_s=_int(data.get("timeout_s")),
            token=data.get("token", ""),
            taskgroup_id=data.get("taskgroup_id") or None,
            created_ms=_int(data.get("created_ms")),
            modified_ms=_int(data.get("modified_ms")),
            started_ms=_int(data.get("started_ms")),
            finished_ms=_int(data.get("finished_ms")),
            next_attempt_ms=_int(data.get("next_attempt_ms")),
            raw=data,
        )

    @property
    def input(self) -> Any:
        return json.loads(self.input_json)

    @property
    def metadata(self) -> dict[str, Any] | None:
        return _json(self.raw.get("metadata"))

    @property
    def output_schema(self) -> dict[str, Any] | None:
        return _json(self.raw.get("output_schema"))

    @property
    def error(self) -> dict[str, Any] | None:
        return _json(self.raw.get("error"))

    @property
    def errors(self) -> list[dict[str, Any]]:
        return _json(self.raw.get("errors")) or []
