"""The `taskq` command. Server commands (`worker`, `dispatcher`) live in
`server.py`; the client commands (`run`, `runs`, `group`) in `runs.py` and
`group.py`, over the HTTP client of `client.py`; `info` (from Redis) in `info.py`.
Each option can also be set by its environment variable."""

from __future__ import annotations

import click

from .. import __version__
from . import group, info, runs, server


@click.group()
@click.version_option(__version__, "--version", "-V", prog_name="taskq", message="%(prog)s %(version)s")
def main() -> None:
    """taskq: async task runs on Redis and RQ."""


for command in (server.worker, server.dispatcher, runs.run_command, runs.runs_group, group.group_group, info.info):
    main.add_command(command)

__all__ = ["main"]
