"""The `taskq` command. Server commands (`worker`, `dispatcher`) live in
`server.py`; the client commands (`run`, `runs`, `group`) in `runs.py` and
`group.py`, over the HTTP client of `client.py`; `info` (from Redis) in `info.py`.
Each option can also be set by its environment variable."""

from __future__ import annotations

import click

from .. import __version__


@click.group()
@click.version_option(__version__, "--version", "-V", prog_name="taskq", message="%(prog)s %(version)s")
def main() -> None:
    """taskq: async task runs on Redis and RQ."""


from . import server  # noqa: E402,F401  (registers the server commands on `main`)
from . import group, info, runs  # noqa: E402,F401  (the client commands)

__all__ = ["main"]
