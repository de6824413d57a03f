"""Processors built into every worker."""

from . import http  # noqa: F401  (registers the `http` processor)
