"""The id scheme: runs `trun_…`, groups `tgrp_…`, tenants.

An id is its prefix and 32 hex digits: the creation time (12 hex digits, epoch ms)
first, so ids sort by creation and an id older than the retention whose record is
gone can be told apart (410) from one that never was (404); then the partition its
data lives in (2 hex digits, keys.py); then 18 random ones, except that the ids one
process makes in one millisecond count up from the first's (as monotonic ULIDs do),
so ids made together sort in the order they were made: a lane orders runs of one
millisecond by id (a group add makes thousands at once). A webhook delivery's id
is its run's id and a number, so it lives where its run does. Anything else is not
an id and never reaches a Redis key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading

from .clock import now_ms

RUN_PREFIX = "trun_"
GROUP_PREFIX = "tgrp_"
RUN_ID = re.compile(r"trun_[0-9a-f]{32}")
GROUP_ID = re.compile(r"tgrp_[0-9a-f]{32}")


_TAIL_BITS = 72
_last = (0, 0)  # the last (ms, tail) made here
_lock = threading.Lock()


def _time_and_tail() -> tuple[int, int]:
    global _last
    with _lock:
        ms, tail = now_ms(), secrets.randbits(_TAIL_BITS - 8)  # room to count up
        last_ms, last_tail = _last
        if ms <= last_ms and last_tail + 1 < 1 << _TAIL_BITS:  # (the clock may step back)
            ms, tail = last_ms, last_tail + 1
        _last = (ms, tail)
        return ms, tail


def _new(prefix: str, partition: int) -> str:
    ms, tail = _time_and_tail()
    return f"{prefix}{ms:012x}{partition:02x}{tail:018x}"


def new_run_id(partition: int) -> str:
    return _new(RUN_PREFIX, partition)


def new_group_id(partition: int) -> str:
    return _new(GROUP_PREFIX, partition)


def partition_of(any_id: str) -> int:
    """The partition of a run, group or delivery id (one that matched its pattern)."""
    return int(any_id[17:19], 16)


def created_ms(any_id: str) -> int | None:
    """When the run or group named by `any_id` was made, read off the id."""
    try:
        return int(any_id[5:17], 16) if len(any_id) == 37 else None
    except ValueError:
        return None


def older_than(any_id: str, seconds: int) -> bool:
    """Whether the id was made more than `seconds` ago (so its record may have expired)."""
    made = created_ms(any_id)
    return made is not None and made < now_ms() - seconds * 1000


def tenant_of(api_key: str) -> str:
    """A tenant is named by a digest of its key; the key itself is never stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
