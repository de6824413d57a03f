"""Output files on the run record: saving one (store, then record under the lease),
listing them with fresh URLs, and deleting those of expired runs."""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any, BinaryIO

from .. import keys
from ..broker import Broker, now_ms
from ..processor import OutputInvalid
from .storage import Storage, storage_for

log = logging.getLogger("taskq.outputs")

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
SWEEP_BATCH = 100
SWEEP_RETRY_MS = 60_000


class OutputRejected(OutputInvalid):
    """An output file was refused (bad name, over a size limit, or the attempt lost
    its run): the run fails saying so, and nothing of the file is kept."""


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise OutputRejected(
            f"output name {name!r}: use 1-200 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )
    return name


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


def save(broker: Broker, run_id: str, token: str, name: str, source: BinaryIO, size: int, content_type: str) -> dict[str, Any]:
    """Stores the file and lists it on the run; returns its entry. OutputRejected
    (nothing kept) when the name is bad, the file or the run's files are over their
    limit, or the attempt no longer holds the run."""
    settings = broker.settings
    check_name(name)
    if size > settings.max_output_file_bytes:
        raise _too_big(name, size, settings.max_output_file_bytes)
    key = f"{run_id}/{uuid.uuid4().hex[:16]}/{name}"
    store = storage(broker)
    capped = _Capped(source, name, settings.max_output_file_bytes)
    store.put(key, capped, content_type)  # type: ignore[arg-type]
    entry = {"name": name, "key": key, "size": capped.count, "content_type": content_type, "saved_ms": now_ms()}
    try:
        reply = broker.scripts.record_output(args=[run_id, token, json.dumps(entry), settings.max_outputs_bytes_per_run])
    except BaseException:
        store.delete(key)
        raise
    if reply[0] != "ok":
        store.delete(key)
        if reply[0] == "lost":
            raise OutputRejected(f"output {name!r} not kept: this attempt no longer holds run {run_id}")
        raise OutputRejected(
            f"output {name!r} ({size} bytes) not kept: the run's outputs would pass the limit of "
            f"{settings.max_outputs_bytes_per_run} bytes (already {reply[1]})"
        )
    return entry


def url(broker: Broker, entry: dict[str, Any], expires_s: int) -> str:
    return storage(broker).url(entry["key"], entry["content_type"], expires_s)


def listing(broker: Broker, record: Mapping[str, str]) -> list[dict[str, Any]]:
    """The run's output files, each with a URL made now, good for
    `output_url_expires_s`."""
    if not record.get("outputs"):
        return []
    from ..run import iso  # run imports this module

    expires_s = broker.settings.output_url_expires_s
    expires_at = iso(now_ms() + expires_s * 1000)
    return [
        {"name": e["name"], "size": e["size"], "content_type": e["content_type"],
         "url": url(broker, e, expires_s), "expires_at": expires_at}
        for e in json.loads(record["outputs"])
    ]  # fmt: skip


def find(broker: Broker, run_id: str, key: str) -> dict[str, Any] | None:
    """The recorded entry for `key`, or None (never saved, refused, or expired)."""
    raw = broker.redis.hget(keys.run(run_id), "outputs")
    return next((e for e in json.loads(raw or "[]") if e["key"] == key), None)


def sweep(broker: Broker) -> int:
    """Deletes the files of runs past their expiry (one process per run: whoever
    takes it out of the set). Returns how many runs' files were deleted."""
    due = broker.redis.zrangebyscore(keys.OUTPUTS_EXPIRING, "-inf", now_ms(), start=0, num=SWEEP_BATCH)
    done = 0
    for run_id in due:
        if not broker.redis.zrem(keys.OUTPUTS_EXPIRING, run_id):
            continue
        try:
            storage(broker).delete_run(run_id)
            done += 1
        except Exception:  # storage away: try again later
            log.warning("could not delete the output files of %s; will retry", run_id, exc_info=True)
            broker.redis.zadd(keys.OUTPUTS_EXPIRING, {run_id: now_ms() + SWEEP_RETRY_MS})
    return done
