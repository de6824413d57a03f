"""How the client commands print: JSON with --json, rich tables otherwise, progress
bars only when stderr is a terminal (a pipe or a CI log gets a summary instead).

Every string is printed as plain text: these consoles read no rich markup and no
`:emoji:` codes, because most of what they print comes from the server (messages,
statuses, metadata) and `[/x]` would crash the command, `[link=…]` make a link.
Our own styling goes through `line()`, as (text, style) parts."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


def _console(**kw: Any) -> Console:
    return Console(markup=False, emoji=False, highlight=False, **kw)


# Tables go to stdout; progress and messages to stderr, so stdout stays pipeable.
out = _console(soft_wrap=True)
err = _console(stderr=True)


def line(*parts: str | tuple[str, str]) -> Text:
    """A line of plain text parts and (text, style) parts; no part is read as markup."""
    return Text.assemble(*parts)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def result(value: Any, as_json: bool, text: str) -> None:
    """`value` as JSON with --json, else `text` on stdout."""
    if as_json:
        emit_json(value)
    else:
        out.print(text)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    # Off a terminal (a pipe, a file) rows are never folded: one run, one line.
    (out if out.is_terminal else _console(width=1000)).print(t)


def progress() -> Progress:
    """A progress display on stderr; disabled (prints nothing) off a terminal."""
    return Progress(
        TextColumn("{task.description}", markup=False),  # a description may be a server's status name
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=False,
    )


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def redis_location(url: str) -> str:
    """REDIS_URL as it may be shown: any password masked, the port and database
    spelled out (`redis://:***@host:6379/0`); query options left off, as they may
    carry credentials too."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:***@" if colon else "***@"  # `redis://secret@host`: a password alone
    if parts.scheme not in ("redis", "rediss"):
        return f"{parts.scheme}://{userinfo}{hosts}{parts.path}"  # unix://, redis+sentinel://: as written
    hosts = hosts or "localhost"
    if not re.search(r":\d+$", hosts):
        hosts += ":6379"
    db = parts.path.strip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    return f"{parts.scheme}://{userinfo}{hosts}/{db}"
