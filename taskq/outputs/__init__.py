"""Output files: what a processor saves (`Output(path=...).save()`), listed on its
run as `outputs` with URLs that expire, and deleted when the run expires.

Where the bytes live is a `Storage` (storage.py): a directory the gateway serves
at signed URLs (directory.py, the default, for one machine or a shared volume), or
S3-compatible object storage with presigned URLs (s3.py, for many machines).

On the run record, `outputs` is a JSON list of {name, key, size, content_type,
saved_ms}; recording one (scripts/record_output.lua) checks that the attempt still
holds the run's lease and that the run stays within its size limit. Each save gets
a key of its own (`{run_id}/{uid}/{name}`), so a save that fails or is refused can
be deleted without touching a file recorded before it.
"""

from __future__ import annotations

from .output import Output
from .record import OutputRejected, listing, save, sweep
from .storage import Storage, storage_for

__all__ = ["Output", "OutputRejected", "Storage", "listing", "save", "storage_for", "sweep"]
