"""A finished run's events, folded into its record (the `events` field) as it ends:
scripts/_lib.lua's fold_events writes them, `unfold` reads them back as the stream
entries they were, so a finished run keeps its history in a few dozen bytes rather
than in a stream of its own."""

from __future__ import annotations

import json

STATE_EVENT = "task_run.state"  # the event type a folded entry without one has

# How long a finished run's event stream is kept once folded into its record: readers
# blocked on it at that moment are woken by its last event (Redis wakes a blocked
# XREAD only while the stream exists), later ones read the record.
EVENTS_LINGER_S = 5

Entry = tuple[str, dict[str, str]]  # a stream entry: its id, its fields


def unfold(folded: str | None) -> list[Entry] | None:
    """A run's `events` field as the stream entries it was folded from (None: no field);
    scripts/_lib.lua's fold_events says how they are folded."""
    if not folded:
        return None
    out: list[Entry] = []
    ms = 0
    carried: dict[str, str] = {}
    for item in json.loads(folded):
        stamp = item[0]
        if not out:
            entry_id = stamp
            ms = int(stamp.split("-")[0])
        else:
            delta, _, seq = str(stamp).partition("-")
            ms += int(delta)
            entry_id = f"{ms}-{seq or 0}"
        if len(item) % 2 == 0:  # a state event: [time, status, name, value, ...]
            fields = {"type": STATE_EVENT, "status": item[1], **carried, "n": ""}
            fields.update(zip(item[2::2], item[3::2], strict=True))
            carried.update({k: v for k, v in fields.items() if k in _CARRIED and v})
        else:
            fields = dict(zip(item[1::2], item[2::2], strict=True))
        out.append((entry_id, fields))
    return out


_CARRIED = ("a", "e", "s")
