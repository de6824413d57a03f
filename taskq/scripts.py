"""The Lua scripts that make each multi-step change to Redis one atomic step.

Each lives in scripts/<name>.lua with the shared helpers of scripts/_lib.lua in
front; their header comments say what they take and return.
"""

from __future__ import annotations

from importlib import resources

from redis import Redis
from redis.commands.core import Script


def _source(name: str) -> str:
    return resources.files("taskq").joinpath("scripts", name).read_text()


class Scripts:
    def __init__(self, redis: Redis) -> None:
        lib = _source("_lib.lua")

        def load(name: str) -> Script:
            return redis.register_script(lib + _source(f"{name}.lua"))

        self.create = load("create")
        self.claim = load("claim")
        self.finish = load("finish")
        self.heartbeat = load("heartbeat")
        self.reap = load("reap")
        self.promote = load("promote")
        self.rescue = load("rescue")
        self.cancel = load("cancel")
        self.take_due = load("take_due")
        self.record_attempt = load("record_attempt")
        self.redeliver = load("redeliver")
