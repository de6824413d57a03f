"""Processors that run by themselves, for the schedule tests with real workers."""

from __future__ import annotations

from taskq import task


@task(name="tick", schedule=1.0, schedule_input={"from": "schedule"})
def tick(inp: dict) -> dict:
    """Every second: returns its fixed input."""
    return inp
