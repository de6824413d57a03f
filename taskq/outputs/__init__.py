"""Output files: what a processor saves (`Output(path=...).save()`), listed on its
run as `outputs` with URLs that expire, and deleted when the run expires.

Where the bytes live is a `Storage` (storage.py): a directory the gateway serves
at signed URLs (directory.py, the default, for one machine or a shared volume), or
S3-compatible object storage with presigned URLs (s3.py, for many machines).

A run's files are listed beside its record (record.py says how), each entry
{name, key, size, content_type, saved_ms}; recording one (scripts/record_output.lua)
checks that the attempt still holds the run's lease and that the run stays within
its limits on files and bytes. Each save gets a key of its own
(`{run_id}/{uid}/{name}`), so a save that fails or is refused can be deleted without
touching a file recorded before it. How a file is served to a browser (inline or as
an attachment, and the headers that keep it from running as a page) is decided in
one place, serving.py.
"""

from __future__ import annotations

# `Output`, the processor's side, is output.py (taskq.Output): it needs the run being
# served (context.py), which nothing here does.
from .record import Page, page, save, sweep
from .serving import Serving, serving
from .storage import Storage, storage_for

__all__ = ["Page", "Serving", "Storage", "page", "save", "serving", "storage_for", "sweep"]
