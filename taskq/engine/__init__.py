"""The worker engine: many runs at once in one process (see engine.py)."""

from __future__ import annotations

from .engine import Engine


def execute() -> None:
    """The function named in every taskq RQ job. taskq's own worker claims the job
    and never calls it; RQ's worker must not serve taskq's queues."""
    raise RuntimeError("taskq runs are served by `taskq worker`, not by `rq worker`")


__all__ = ["Engine", "execute"]
