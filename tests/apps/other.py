"""A second app, served by a worker of its own beside one serving workers.app on the
same queue: each worker takes only the runs of the processors it serves."""

from __future__ import annotations

from taskq import task


@task(name="other_echo")
def other_echo(inp: dict) -> dict:
    return inp
