"""Declares the example app's Limit "model" with another budget: a worker serving it
beside a live one serving workers.app must refuse to start."""

from __future__ import annotations

from taskq import Limit, task

MODEL = Limit("model", concurrency=5)


@task(name="overbudget", limits=[MODEL])
def overbudget(inp: dict) -> dict:
    return inp
