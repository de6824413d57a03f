"""The dashboard at /dashboard: server-rendered pages over the same domain functions
as the API, for the tenant whose API key signed in (auth.py), one view per page
(views.py)."""

from __future__ import annotations

from flask import Blueprint

from . import views
from .auth import PREFIX, bp

__all__ = ["PREFIX", "blueprints"]


def blueprints() -> list[Blueprint]:
    assert views  # the pages are registered on `bp` by importing views
    return [bp]
