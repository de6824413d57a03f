"""Output files in a local directory (TASKQ_OUTPUT_DIR), served by the gateway at
signed, expiring URLs (GET /v1/outputs/{run_id}/{uid}/{name}).

Right for one machine, or for many that share the directory (a network volume
mounted at the same path by every worker and gateway).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from .. import paths
from . import signing

CHUNK_BYTES = 1 << 20


class DirectoryStorage:
    def __init__(self, root: str, secret: str, public_url: str = "") -> None:
        self.root = Path(root).resolve()
        self.secret = secret
        self.base = public_url.rstrip("/")

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError("output key outside the output directory")
        return path

    def put(self, key: str, source: BinaryIO, content_type: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written under a hidden temporary name and renamed into place: a worker killed
        # mid-save leaves no file under `key`, only a temporary one the sweep removes.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".saving-")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK_BYTES)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def url(self, key: str, content_type: str, expires_s: int) -> str:
        return self.base + signing.sign(self.secret, paths.OUTPUT_FILES + quote(key), expires_s)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete_run(self, run_id: str) -> None:
        shutil.rmtree(self.path(run_id), ignore_errors=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
