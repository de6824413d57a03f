"""Payloads kept in the output storage instead of Redis (payload.py has the forms).

A payload of at least TASKQ_PAYLOAD_OFFLOAD_BYTES is written under
`{run_id}/payload/{field}-{uid}` (beside the run's output files, never listed among
them nor served) and its run keeps a reference; the run is then marked as holding
bytes in the storage (`has_outputs`), so that they are deleted with its output
files when it expires (record.sweep). Only a storage the operator configured
(storage.configured) is used: the default directory is one machine's, and a payload
written there by a gateway could not be read by a worker on another machine.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterable

from .. import payload
from ..broker import Broker
from ..errors import StorageUnavailable
from ..record import RunRecord
from .record import storage
from .storage import configured

log = logging.getLogger("taskq.outputs")


def store(broker: Broker, run_id: str, field: str, text: str) -> bytes:
    """What to write in the run's `field` for the JSON `text`: it as it is, compressed,
    or (past the offload threshold, with a configured storage) a reference to it,
    written now. The caller deletes the blob (`discard`) if the run does not keep it."""
    settings = broker.settings
    packed = payload.pack(text, settings.compress_bytes)
    limit = settings.payload_offload_bytes
    if not limit or len(packed) < limit or not configured(settings):
        return packed
    key = f"{run_id}/payload/{field}-{uuid.uuid4().hex[:8]}"
    storage(broker).put(key, io.BytesIO(packed), "application/octet-stream")
    return payload.reference(key)


def offloaded(stored: object) -> bool:
    """Whether a value `store` made is a reference (its run then holds bytes in the storage)."""
    return isinstance(stored, bytes) and payload.referenced(stored) is not None


def discard(broker: Broker, stored: Iterable[object]) -> None:
    """Deletes the blobs of values `store` made that their run did not keep (a create
    that made no run, an attempt whose lease was lost); best effort: a blob left behind
    costs storage, never correctness."""
    for value in stored:
        key = payload.referenced(value) if isinstance(value, bytes) else None
        if key is None:
            continue
        try:
            storage(broker).delete(key)
        except Exception:
            log.warning("could not delete the unkept payload %s", key, exc_info=True)


def reader(broker: Broker) -> payload.Blobs:
    """Reads offloaded payloads from the broker's output storage."""

    def read(key: str) -> bytes:
        try:
            return storage(broker).get(key)
        except Exception as exc:
            log.warning("could not read the payload %s from the output storage", key, exc_info=True)
            raise StorageUnavailable(
                "a payload of this run is in the output storage, which could not be read; try again shortly",
                retry_after_s=1,
            ) from exc

    return read


def bind(record: RunRecord, broker: Broker) -> RunRecord:
    """The record, reading its offloaded payloads (if any) from the broker's storage."""
    return record.reading(reader(broker))
