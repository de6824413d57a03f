"""taskq: turn any Python function, or any slow HTTP endpoint, into an async run."""

from __future__ import annotations

from .engine.context import CurrentRun, current_run
from .outputs import Output
from .processor import Processor, task

__all__ = ["CurrentRun", "Output", "Processor", "current_run", "task"]
