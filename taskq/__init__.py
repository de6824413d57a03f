"""taskq: turn any Python function, or any slow HTTP endpoint, into an async run."""

from __future__ import annotations

from .execution import CurrentRun, current_run
from .processor import Processor, task

__all__ = ["CurrentRun", "Processor", "current_run", "task"]
