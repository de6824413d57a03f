"""Output files of a run: saving one (store, then record under the lease), listing
them page by page with fresh URLs, and deleting those of expired runs.

A run's files are kept in `taskq:run:{id}:outputs` (name -> entry) and
`…:outputs:order` (name -> save number, the order they are listed in), with their
number and total size as counters on the run record (`outputs_count`,
`outputs_bytes`): a save costs O(log n), and a read of the run costs one page of
files, however many the run has.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

from .. import errors, keys
from ..broker import Broker, translated
from ..clock import iso, now_ms
from ..errors import OutputRejected
from ..ids import partition_of
from ..record import RunRecord
from .names import check_content_type, check_name
from .storage import Storage, storage_for

log = logging.getLogger("taskq.outputs")

SWEEP_BATCH = 100
SWEEP_RETRY_MS = 60_000
TASK_RUN_PAGE = 100  # files a TaskRun lists; all of them are at GET /v1/tasks/runs/{id}/outputs
MAX_PAGE = 1000  # files one page of that listing may ask for


@functools.lru_cache(maxsize=16)
def _secret(broker: Broker) -> str:
    """The key that signs output URLs: TASKQ_OUTPUT_SECRET, or else one made once and
    kept in Redis, so that every gateway and worker signs alike with nothing to set."""
    if broker.settings.output_secret:
        return broker.settings.output_secret
    broker.redis.set(keys.OUTPUTS_SECRET, secrets.token_urlsafe(32), nx=True)
    return str(broker.redis.get(keys.OUTPUTS_SECRET))


def storage(broker: Broker) -> Storage:
    secret = "" if broker.settings.output_url else _secret(broker)
    return storage_for(broker.settings, secret)


class _Capped:
    """Reads `source`, refusing to pass more than `limit` bytes (a file that grows
    while it is saved cannot slip past the limit checked before)."""

    def __init__(self, source: BinaryIO, name: str, limit: int) -> None:
        self.source, self.name, self.limit, self.count = source, name, limit, 0

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.count += len(data)
        if self.count > self.limit:
            raise _too_big(self.name, self.count, self.limit)
        return data


def _too_big(name: str, size: int, limit: int) -> OutputRejected:
    return OutputRejected(f"output {name!r} is {size} bytes, over the limit of {limit} per file")


def save(
    broker: Broker, run_id: str, token: str, name: str, source: BinaryIO, size: int, content_type: str
) -> dict[str, Any]:
    """Stores the file and lists it on the run; returns its entry. OutputRejected
    (nothing kept) when the name or content type is bad, the file, the run's files or
    their number are over their limit, or the attempt no longer holds the run."""
    settings = broker.settings
    check_name(name)
    check_content_type(name, content_type)
    if size > settings.max_output_file_bytes:
        raise _too_big(name, size, settings.max_output_file_bytes)
    key = f"{run_id}/{uuid.uuid4().hex[:16]}/{name}"
    store = storage(broker)
    capped = _Capped(source, name, settings.max_output_file_bytes)
    store.put(key, capped, content_type)  # type: ignore[arg-type]
    entry = {"name": name, "key": key, "size": capped.count, "content_type": content_type, "saved_ms": now_ms()}
    try:
        reply = broker.scripts.record_output(
            partition_of(run_id),
            run_id,
            token,
            name,
            json.dumps(entry),
            capped.count,
            settings.max_outputs_bytes_per_run,
            settings.max_outputs_per_run,
        )
    except BaseException:
        store.delete(key)
        raise
    if reply[0] != "ok":
        store.delete(key)
        raise _refused(
            reply, name, capped.count, run_id, settings.max_outputs_bytes_per_run, settings.max_outputs_per_run
        )
    if reply[2]:
        _delete_replaced(store, reply[2])
    return entry


def _refused(reply: list[str], name: str, size: int, run_id: str, max_bytes: int, max_files: int) -> OutputRejected:
    if reply[0] == "lost":
        return OutputRejected(f"output {name!r} not kept: this attempt no longer holds run {run_id}")
    if reply[0] == "full":
        return OutputRejected(
            f"output {name!r} not kept: the run already has {reply[1]} output files, the limit of {max_files} "
            f"files per run (TASKQ_MAX_OUTPUTS_PER_RUN)"
        )
    return OutputRejected(
        f"output {name!r} ({size} bytes) not kept: the run's outputs would pass the limit of "
        f"{max_bytes} bytes (already {reply[1]})"
    )


def _delete_replaced(store: Storage, key: str) -> None:
    """The bytes of a file saved again under its name: no longer listed, so no
    longer counted against the run's limit, and deleted now rather than at expiry."""
    try:
        store.delete(key)
    except Exception:  # storage away: the run's sweep takes it when the run expires
        log.warning("could not delete the replaced output file %s", key, exc_info=True)


def url(broker: Broker, entry: dict[str, Any], expires_s: int) -> str:
    return storage(broker).url(entry["key"], entry["content_type"], expires_s)


@dataclass(frozen=True)
class Page:
    """Some of a run's output files, in the order saved, each with a URL made now;
    `next_cursor` continues after them (None once there are no more)."""

    files: list[dict[str, Any]]
    next_cursor: str | None = None


def page(broker: Broker, record: RunRecord, limit: int = TASK_RUN_PAGE, cursor: str | None = None) -> Page:
    """The run's output files after `cursor` (a `next_cursor` given before), at most
    `limit` of them, each with a URL good for `output_url_expires_s`. Costs the page,
    not the run's files. A file saved again while a client pages moves to the end."""
    if not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationFailed(f"limit: must be between 1 and {MAX_PAGE}", {"field": "limit"})
    after = _after(cursor)
    if not record.outputs_count:
        return Page([])
    entries, more = _entries(broker, record, after, limit)
    expires_s = broker.settings.output_url_expires_s
    expires_at = iso(now_ms() + expires_s * 1000)
    files = [
        {
            "name": e["name"],
            "size": e["size"],
            "content_type": e["content_type"],
            "url": url(broker, e, expires_s),
            "expires_at": expires_at,
        }
        for _, e in entries
    ]
    return Page(files, str(entries[-1][0]) if more else None)


def _after(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 15):
        raise errors.ValidationFailed("cursor: not a cursor this endpoint returned", {"field": "cursor"})
    return int(cursor)


def _entries(
    broker: Broker, record: RunRecord, after: int, limit: int
) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    """(position, entry) of the files after position `after`, at most `limit`, and
    whether more follow."""
    legacy = record.get("outputs")
    if legacy:  # recorded by an earlier version: one JSON list
        rest = [(i, e) for i, e in enumerate(json.loads(legacy), 1) if i > after]
        return rest[:limit], len(rest) > limit
    files, order = keys.run_outputs(record.id), keys.run_outputs_order(record.id)
    small = record.outputs_count <= limit  # all of them fit in a page: read them in the same round trip
    with translated():
        pipe = broker.redis.pipeline(transaction=False)
        pipe.zrangebyscore(order, f"({after}", "+inf", start=0, num=limit + 1, withscores=True)
        if small:
            pipe.hgetall(files)
        replies = pipe.execute()
        rows = replies[0][:limit]
        names = [name for name, _ in rows]
        if small:
            found = replies[1]
        else:
            found = dict(zip(names, broker.redis.hmget(files, names), strict=True)) if names else {}
    listed = [(int(score), json.loads(found[name])) for name, score in rows if found.get(name)]
    return listed, len(replies[0]) > limit


def find(broker: Broker, run_id: str, key: str) -> dict[str, Any] | None:
    """The listed entry for `key`, or None (never saved, refused, replaced, or expired)."""
    with translated():
        pipe = broker.redis.pipeline(transaction=False)
        pipe.hget(keys.run_outputs(run_id), key.rsplit("/", 1)[-1])
        pipe.hget(keys.run(run_id), "outputs")
        raw, legacy = pipe.execute()
    entries = [json.loads(raw)] if raw else json.loads(legacy or "[]")  # a list: recorded by an earlier version
    return next((e for e in entries if e["key"] == key), None)


def sweep(broker: Broker, partition: int) -> int:
    """Deletes the files of the partition's runs past their expiry (one process per
    run: whoever takes it out of the set). Returns how many runs' files were deleted."""
    now = broker.now_ms()  # the clock set_status dated the expiries with
    expiring = keys.outputs_expiring(partition)
    due = broker.redis.zrangebyscore(expiring, "-inf", now, start=0, num=SWEEP_BATCH)
    done = 0
    for run_id in due:
        if not broker.redis.zrem(expiring, run_id):
            continue
        try:
            storage(broker).delete_run(run_id)
            done += 1
        except Exception:  # storage away: try again later
            log.warning("could not delete the output files of %s; will retry", run_id, exc_info=True)
            broker.redis.zadd(expiring, {run_id: now + SWEEP_RETRY_MS})
    return done
