"""`Output`: a file a processor saves, in the shape of Beam's task queue.

out = Output(path="result.txt")
out.save()
url = out.public_url(expires=3600)

Output.from_bytes("report.csv", data, content_type="text/csv").save()
"""

from __future__ import annotations

import io
import mimetypes
import os
from pathlib import Path
from typing import Any, BinaryIO

from ..context import current_run
from . import names, record

NO_FILE = "this Output has no file: give a path, or use Output.from_bytes(name, data)"


class Output:
    """One file of the current run. `save()` stores it and lists it on the run;
    `public_url()` is a URL anyone holding it can GET, for `expires` seconds."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, name: str | None = None, content_type: str | None = None
    ) -> None:
        if path is None and name is None:
            raise ValueError("Output needs a path (or use Output.from_bytes(name, data))")
        self.path = Path(path) if path is not None else None
        self.name = names.check_name(name or Path(str(path)).name)
        self.content_type = names.check_content_type(
            self.name, content_type or mimetypes.guess_type(self.name)[0] or "application/octet-stream"
        )
        self._data: bytes | None = None
        self._entry: dict[str, Any] | None = None

    @classmethod
    def from_bytes(cls, name: str, data: bytes, content_type: str | None = None) -> Output:
        out = cls(name=name, content_type=content_type)
        out._data = bytes(data)
        return out

    @property
    def size(self) -> int:
        if self._data is not None:
            return len(self._data)
        if self.path is None:
            raise ValueError(NO_FILE)
        return self.path.stat().st_size

    def save(self) -> Output:
        """Stores the file and adds it to the run's `outputs` (one of the same name is
        replaced). Raises OutputRejected, keeping nothing, when it is over a limit or
        its content type is not a media type."""
        if self._data is None and self.path is None:
            raise ValueError(NO_FILE)
        current = current_run()
        source: BinaryIO
        if self._data is not None:
            source = io.BytesIO(self._data)
        else:
            assert self.path is not None
            source = self.path.open("rb")
        with source:
            size = os.fstat(source.fileno()).st_size if self._data is None else len(self._data)
            self._entry = record.save(
                current._broker, current.run_id, current.token, self.name, source, size, self.content_type
            )
        return self

    def public_url(self, expires: int = 3600) -> str:
        """A URL for the saved file, good for `expires` seconds."""
        if self._entry is None:
            raise RuntimeError("save() the output before asking for its URL")
        return record.url(current_run()._broker, self._entry, int(expires))
