"""taskq: turn any Python function, or any slow HTTP endpoint, into an async run."""

from __future__ import annotations

from importlib import metadata

from .context import CurrentRun, current_run
from .errors import RateLimited
from .limits import Limit
from .outputs.output import Output
from .processor import Processor, task

DISTRIBUTION = "taskq-server"  # the name on PyPI (`taskq` there is another project's)

try:
    __version__ = metadata.version(DISTRIBUTION)  # written once, in pyproject.toml
except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["CurrentRun", "Limit", "Output", "Processor", "RateLimited", "current_run", "task"]
