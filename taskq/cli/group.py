"""`taskq group create|add|watch|results`: task groups over HTTP.

`group add` sends the inputs file in batches of up to 1,000 runs (each batch all or
nothing, as the API adds them) and is resumable: it keeps its progress in
`<inputs>.<group_id>.progress` next to the inputs file, written before and after
each batch. Rerun the same command after an interruption and it carries on after
the last batch that landed. A batch that was sent but whose answer never came is
settled by the group's run count: the API adds all of a batch or none of it, so the
count says which (this holds while no one else adds runs to the same group at the
same time).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from . import show
from .client import Api, ApiError, api_options
from .runs import parse_metadata

MAX_BATCH = 1000
REFRESH_S = 0.25  # `watch` reads the group's counts at most this often


@click.group("group")
def group_group() -> None:
    """Create task groups, add runs from a file, watch them, fetch their results."""


@group_group.command("create")
@click.option("--metadata", multiple=True, help="key=value, repeatable")
@api_options
def create(api: Api, metadata: tuple[str, ...], as_json: bool) -> None:
    """Create an empty task group; print its id."""
    body = {"metadata": parse_metadata(metadata)} if metadata else {}
    grp = api.post("/v1/tasks/groups", body)
    show.result(grp, as_json, grp["taskgroup_id"])


def _lines(path: Path, start: int) -> Iterator[tuple[int, str]]:
    """(line number from 0, text) of each non-blank line from line `start` on."""
    with path.open() as f:
        for number, line in enumerate(f):
            if number >= start and line.strip():
                yield number, line


def _batches(path: Path, start: int, size: int, processor: str | None) -> Iterator[tuple[int, list[int], list[Any]]]:
    """(line after the batch, line numbers, run requests) of each batch."""
    numbers: list[int] = []
    items: list[Any] = []
    last = start - 1
    for number, line in _lines(path, start):
        try:
            value = json.loads(line)
        except ValueError:
            raise click.ClickException(f"{path}:{number + 1}: not JSON") from None
        items.append({"input": value, "processor": processor} if processor else value)
        numbers.append(number)
        last = number
        if len(items) == size:
            yield last + 1, numbers, items
            numbers, items = [], []
    if items:
        yield last + 1, numbers, items


class Progress:
    """The progress file of one `group add`: lines done, and a batch in flight."""

    def __init__(self, inputs: Path, group_id: str) -> None:
        self.path = inputs.with_name(f"{inputs.name}.{group_id}.progress")
        state = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.done_lines: int = state.get("done_lines", 0)
        self.runs_added: int = state.get("runs_added", 0)
        self.in_flight: dict[str, int] | None = state.get("in_flight")

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        state = {"done_lines": self.done_lines, "runs_added": self.runs_added, "in_flight": self.in_flight}
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)  # atomic: an interruption leaves the old or the new state

    def settle(self, num_task_runs: int) -> None:
        """Decides whether the batch in flight when the last run stopped landed."""
        if self.in_flight is None:
            return
        before, n = self.in_flight["runs_before"], self.in_flight["runs"]
        if num_task_runs == before + n:
            self.done_lines, self.runs_added = self.in_flight["next_line"], self.runs_added + n
        elif num_task_runs != before:
            raise click.ClickException(
                f"the group has {num_task_runs} runs, neither {before} nor {before + n}: someone else added runs "
                f"meanwhile, so whether the last batch landed cannot be told. Check it, then edit {self.path}."
            )
        self.in_flight = None
        self.save()


@group_group.command("add")
@click.argument("group_id")
@click.option("--inputs", "inputs", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--processor", default=None, help="each line is one input for this processor")
@click.option("--batch-size", default=MAX_BATCH, show_default=True, type=click.IntRange(1, MAX_BATCH))
@api_options
def add(api: Api, group_id: str, inputs: Path, processor: str | None, batch_size: int, as_json: bool) -> None:
    """Add a run per line of INPUTS (JSON Lines): with --processor each line is an
    input, else a whole {input, processor, metadata, task_spec} object."""
    progress_file = Progress(inputs, group_id)
    grp = api.get(f"/v1/tasks/groups/{group_id}")
    progress_file.settle(grp["status"]["num_task_runs"])
    runs_now = grp["status"]["num_task_runs"]
    total = sum(1 for _ in _lines(inputs, 0))
    done_before = sum(1 for _ in _lines(inputs, 0)) - sum(1 for _ in _lines(inputs, progress_file.done_lines))
    if done_before:
        show.err.print(f"resuming after line {progress_file.done_lines} ({done_before} runs already added)")
    with show.progress() as bar:
        task = bar.add_task(f"adding to {group_id}", total=total, completed=done_before)
        for next_line, numbers, items in _batches(inputs, progress_file.done_lines, batch_size, processor):
            progress_file.in_flight = {"runs_before": runs_now, "runs": len(items), "next_line": next_line}
            progress_file.save()
            try:
                added = api.post(f"/v1/tasks/groups/{group_id}/runs", {"inputs": items}, timeout_s=120)
            except ApiError as exc:
                if exc.status and exc.status < 500:
                    progress_file.in_flight = None  # refused: nothing of the batch was added
                    progress_file.save()
                    raise _at_line(exc, inputs, numbers) from None
                raise
            runs_now = added["status"]["num_task_runs"]
            progress_file.done_lines, progress_file.in_flight = next_line, None
            progress_file.runs_added += len(items)
            progress_file.save()
            bar.advance(task, len(items))
    progress_file.path.unlink(missing_ok=True)
    summary = {"taskgroup_id": group_id, "added": total - done_before, "num_task_runs": runs_now}
    if as_json:
        show.emit_json(summary)
    else:
        show.err.print(f"added {summary['added']} runs; the group has {runs_now}")


def _at_line(exc: ApiError, inputs: Path, numbers: list[int]) -> ApiError:
    """The API names `inputs.<i>`: say which line of the file that is."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    named = re.match(r"inputs\.(\d+)", str(detail.get("field") or exc.message))
    index = detail.get("index", int(named.group(1)) if named else None)
    if isinstance(index, int) and 0 <= index < len(numbers):
        return ApiError(exc.status, f"{inputs}:{numbers[index] + 1}: {exc.message}", exc.detail)
    return exc


@group_group.command("watch")
@click.argument("group_id")
@api_options
def watch(api: Api, group_id: str, as_json: bool) -> None:
    """Show the group's progress by status until every run has ended; exit 1 if
    any run failed."""
    status = api.get(f"/v1/tasks/groups/{group_id}")["status"]
    last_id = None
    with show.progress() as bar:
        tasks: dict[str, Any] = {}

        def draw(st: dict[str, Any]) -> None:
            counts = st["task_run_status_counts"]
            for name in sorted(set(counts) | set(tasks)):
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=st["num_task_runs"])
                bar.update(tasks[name], completed=counts.get(name, 0), total=st["num_task_runs"])

        draw(status)
        refreshed = time.monotonic()
        while status["is_active"]:
            for event_id, event in api.events(f"/v1/tasks/groups/{group_id}/events", {"last_event_id": last_id}):
                last_id = event_id or last_id
                if event.get("type") == "task_group_status":
                    status = event["status"]
                elif time.monotonic() - refreshed >= REFRESH_S:
                    status = api.get(f"/v1/tasks/groups/{group_id}")["status"]
                else:
                    continue
                refreshed = time.monotonic()
                draw(status)
            status = api.get(f"/v1/tasks/groups/{group_id}")["status"]
            draw(status)
    if as_json:
        show.emit_json(status)
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(status["task_run_status_counts"].items()))
        show.err.print(f"{group_id}: {status['status_message']} ({counts or 'empty'})")
    sys.exit(1 if status["task_run_status_counts"].get("failed") else 0)


@group_group.command("results")
@click.argument("group_id")
@click.option("--include-input", is_flag=True, help="add each run's input")
@api_options
def results(api: Api, group_id: str, include_input: bool, as_json: bool) -> None:
    """Print one JSON line per run of the group, in the order they were added:
    its id, status, and output (or error)."""
    params = {"include_output": "true", "include_input": "true" if include_input else None}
    for _event_id, event in api.events(f"/v1/tasks/groups/{group_id}/runs", params):
        if event.get("type") != "task_run.state":
            if event.get("type") == "error":
                raise ApiError(0, event["error"]["message"])
            continue
        run = event["run"]
        line: dict[str, Any] = {"run_id": run["run_id"], "status": run["status"]}
        if include_input:
            line["input"] = event.get("input")
        line["output"] = (event.get("output") or {}).get("content")
        if run.get("error"):
            line["error"] = run["error"]
        show.emit_json(line)
