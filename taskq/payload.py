"""How a run's payloads are stored: its input, its output and the answers it was
given, each JSON text, kept in one of three forms in its record's field:

    plain        the JSON text itself (what every payload was before this codec)
    compressed   MARK_ZLIB + zlib of the JSON text: payloads of at least
                 TASKQ_COMPRESS_BYTES that zlib makes smaller
    reference    MARK_REF + a key in the output storage, where the payload (plain or
                 compressed, as above) lives: payloads of at least
                 TASKQ_PAYLOAD_OFFLOAD_BYTES, when an output storage is configured
                 (outputs/payloads.py writes and deletes them)

JSON text never starts with a NUL, so a mark cannot be taken for a plain payload,
and a record written before the codec reads as it did. Compressed bytes are kept in
Redis as they are: they are written as bytes, and the clients decode replies with
`surrogateescape` (broker.py), so a value read is a str that `to_bytes` turns back
into the same bytes. No Lua script parses these fields (they pass through HGETALL,
HMGET and HSET only).

Why zlib: measured on ~1 KB JSON records (bench/memory.py), zlib makes 1,000 B into
~510 B and zstd (without a trained dictionary) into ~535 B: at these sizes zstd's
frame costs more than its better matching gains, and zlib is in the standard library.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from .errors import StorageUnavailable

# The fields that hold a payload (record.py reads them through `text`).
FIELDS = ("input", "output", "answers")

MARK_ZLIB = b"\x00z"
MARK_REF = b"\x00@"
LEVEL = 6

# Reads the bytes stored under a key of the output storage (outputs/payloads.py);
# StorageUnavailable when it cannot.
Blobs = Callable[[str], bytes]

__all__ = ["Blobs", "StorageUnavailable", "pack", "reference", "referenced", "text", "to_bytes", "unpack"]


def to_bytes(stored: str) -> bytes:
    """A stored value as read (a str, see the module's note) as the bytes to write it
    back with: the Redis client's command packer encodes str strictly."""
    return stored.encode("utf-8", "surrogateescape")


def pack(text: str, compress_bytes: int) -> bytes:
    """The JSON text as kept inline: compressed when it is at least `compress_bytes`
    long (0: never) and zlib makes it smaller, else as it is."""
    data = text.encode()
    if compress_bytes and len(data) >= compress_bytes:
        packed = MARK_ZLIB + zlib.compress(data, LEVEL)
        if len(packed) < len(data):
            return packed
    return data


def unpack(data: bytes) -> str:
    """The JSON text of what `pack` made."""
    if data.startswith(MARK_ZLIB):
        return zlib.decompress(data[len(MARK_ZLIB) :]).decode()
    return data.decode()


def reference(key: str) -> bytes:
    """The stored form of a payload that lives in the output storage under `key`."""
    return MARK_REF + key.encode()


def referenced(stored: str | bytes | None) -> str | None:
    """The output storage key a stored payload (as read, or as written) points at, or
    None when it is inline."""
    if isinstance(stored, str):  # (the mark is ASCII: it reads as itself)
        return stored[len(MARK_REF) :] if stored.startswith(MARK_REF.decode()) else None
    if stored and stored.startswith(MARK_REF):
        return stored[len(MARK_REF) :].decode()
    return None


def text(stored: str | None, blobs: Blobs | None = None) -> str | None:
    """The JSON text of a payload as read from Redis (None when there is none);
    `blobs` reads what was offloaded."""
    if not stored or not stored.startswith("\x00"):
        return stored
    key = referenced(stored)
    if key is None:
        return unpack(to_bytes(stored))
    if blobs is None:
        raise RuntimeError(f"a payload in the output storage ({key!r}), read from a record bound to no storage")
    return unpack(blobs(key))
