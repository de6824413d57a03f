"""The seam between output files and where their bytes live."""

from __future__ import annotations

import functools
from typing import BinaryIO, Protocol

from ..settings import Settings


class Storage(Protocol):
    """Where output files live. Keys are `{run_id}/{uid}/{name}`."""

    def put(self, key: str, source: BinaryIO, content_type: str) -> None:
        """Stores the whole of `source` under `key`; a reader never sees part of it
        (a save cut short leaves nothing under `key`)."""

    def url(self, key: str, content_type: str, expires_s: int) -> str:
        """A URL anyone holding it can GET the file at, for `expires_s` seconds."""

    def get(self, key: str) -> bytes:
        """The bytes stored under `key` (FileNotFoundError/KeyError when there are none)."""

    def delete_run(self, run_id: str) -> None:
        """Deletes every file of the run (nothing there is fine)."""

    def delete(self, key: str) -> None:
        """Deletes one file (nothing there is fine)."""


DEFAULT_DIR = "var/outputs"  # where output files live when no storage is configured


def configured(settings: Settings) -> bool:
    """Whether the operator named the storage (output_dir or output_url): only then is
    it taken to be shared by every process, so that payloads may be offloaded to it."""
    return bool(settings.output_url or settings.output_dir)


@functools.lru_cache(maxsize=8)
def storage_for(settings: Settings, secret: str) -> Storage:
    """The storage the settings name: `output_url` (s3://bucket/prefix) if set, else
    the directory `output_dir`. `secret` signs the directory's URLs."""
    if settings.output_url:
        from .s3 import S3Storage

        return S3Storage(settings.output_url)
    from .directory import DirectoryStorage

    return DirectoryStorage(settings.output_dir or DEFAULT_DIR, secret, settings.public_url)
