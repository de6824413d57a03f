"""`taskq run` and `taskq runs get|result|cancel|events|list`: runs over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import show
from .client import Api, ApiError, api_options

RESULT_POLL_S = 600  # one long poll of /result; repeated while the run is still going


def parse_input(value: str) -> Any:
    """`--input`: JSON, or `@path` to a JSON file; what is not JSON is sent as text."""
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}", param_hint="--input") from None
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_metadata(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """`--metadata k=v` (repeatable); a value that is JSON (a number, true) is kept so."""
    if not pairs:
        return None
    meta: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: expected key=value", param_hint="--metadata")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        meta[name] = value if isinstance(value, str | int | float | bool) else raw
    return meta


@click.command("run")
@click.argument("processor")
@click.option("--input", "input_", required=True, help="the input: JSON, @file.json, or text")
@click.option("--metadata", multiple=True, help="key=value, repeatable")
@click.option("--webhook", default=None, help="a URL to receive the result")
@click.option("--wait", is_flag=True, help="wait for the run to end and print its output")
@click.option("--follow", is_flag=True, help="print the run's progress events as they come")
@api_options
def run_command(
    api: Api,
    processor: str,
    input_: str,
    metadata: tuple[str, ...],
    webhook: str | None,
    wait: bool,
    follow: bool,
    as_json: bool,
) -> None:
    """Create a run of PROCESSOR; print its id (exit 0), or with --wait its output
    (exit 0 completed, 1 failed or cancelled)."""
    body: dict[str, Any] = {"processor": processor, "input": parse_input(input_)}
    if (meta := parse_metadata(metadata)) is not None:
        body["metadata"] = meta
    if webhook:
        body["webhook"] = {"url": webhook}
    run = api.post("/v1/tasks/runs", body)
    run_id = run["run_id"]
    if not (wait or follow):
        show.result(run, as_json, run_id)
        return
    show.err.print(show.line((run_id, "bold"), f" {run['status']}"))
    if follow:
        _follow(api, run_id, as_json)
    if wait:
        sys.exit(_print_result(api, run_id, as_json))
    final = api.get(f"/v1/tasks/runs/{run_id}")
    sys.exit(0 if final["status"] == "completed" else 1)


def _follow(api: Api, run_id: str, as_json: bool) -> None:
    """Prints the run's events until it ends (the stream ends with it)."""
    last_id = None
    while True:
        for event_id, event in api.events(f"/v1/tasks/runs/{run_id}/events", {"last_event_id": last_id}):
            last_id = event_id or last_id
            if as_json:
                show.emit_json(event)
            elif event.get("type") == "task_run.state":
                show.err.print(show.line(f"{event['run']['modified_at']}  status: ", (event["run"]["status"], "bold")))
            elif event.get("type") == "error":
                raise ApiError(0, event["error"]["message"])
            else:
                show.err.print(f"{event.get('timestamp') or ''}  {event.get('message', '')}")
        if not api.get(f"/v1/tasks/runs/{run_id}")["is_active"]:
            return  # else the stream hit its time limit: carry on from the last event


def _print_result(api: Api, run_id: str, as_json: bool) -> int:
    """Prints the run's output once it has ended; the exit code to end with."""
    while True:
        try:
            result = api.get(
                f"/v1/tasks/runs/{run_id}/result", params={"timeout": RESULT_POLL_S}, timeout_s=RESULT_POLL_S + 30
            )
        except ApiError as exc:
            if exc.status == 408:
                continue
            if exc.status == 409:
                if as_json:
                    show.emit_json({"run_id": run_id, **(exc.detail or {})})
                show.err.print(show.line((exc.message, "red")))
                return 1
            raise
        if as_json:
            show.emit_json(result)
        else:
            output = result["output"]
            click.echo(output["content"] if output["type"] == "text" else json.dumps(output["content"], indent=2))
        return 0


@click.group("runs")
def runs_group() -> None:
    """Read, wait for, cancel and list runs."""


@runs_group.command("get")
@click.argument("run_id")
@api_options
def get(api: Api, run_id: str, as_json: bool) -> None:
    """Show one run."""
    run = api.get(f"/v1/tasks/runs/{run_id}")
    if as_json:
        show.emit_json(run)
        return
    fields = [
        "run_id",
        "status",
        "processor",
        "taskgroup_id",
        "attempts",
        "max_retries",
        "created_at",
        "started_at",
        "finished_at",
    ]
    show.table(None, ["field", "value"], [(f, run.get(f)) for f in fields if run.get(f) is not None])
    if run.get("metadata"):
        show.out.print(f"metadata: {json.dumps(run['metadata'])}")
    if run.get("error"):
        show.out.print(show.line(("error:", "red"), f" {run['error']['message']}"))


@runs_group.command("result")
@click.argument("run_id")
@api_options
def result(api: Api, run_id: str, as_json: bool) -> None:
    """Wait for the run to end; print its output (exit 1 if it failed or was cancelled)."""
    sys.exit(_print_result(api, run_id, as_json))


@runs_group.command("cancel")
@click.argument("run_id")
@api_options
def cancel(api: Api, run_id: str, as_json: bool) -> None:
    """Cancel a run: at once if queued; a running one stops at its next heartbeat."""
    run = api.post(f"/v1/tasks/runs/{run_id}/cancel")
    show.result(run, as_json, f"{run_id} {run['status']}")


@runs_group.command("events")
@click.argument("run_id")
@api_options
def events_command(api: Api, run_id: str, as_json: bool) -> None:
    """Print the run's events (progress and status) until it ends."""
    _follow(api, run_id, as_json)


@runs_group.command("list")
@click.option("--status", default=None, help="only runs in this status")
@click.option("--processor", default=None, help="only runs of this processor")
@click.option("--metadata", multiple=True, help="only runs with this key=value in their metadata, repeatable")
@click.option("--limit", default=20, show_default=True, help="runs per page")
@click.option("--cursor", default=None, help="continue from a previous page")
@click.option("--all", "all_pages", is_flag=True, help="follow the cursor to the end")
@api_options
def list_command(
    api: Api,
    status: str | None,
    processor: str | None,
    metadata: tuple[str, ...],
    limit: int,
    cursor: str | None,
    all_pages: bool,
    as_json: bool,
) -> None:
    """List your runs, newest first."""
    params: dict[str, Any] = {"status": status, "processor": processor, "limit": limit}
    for pair in metadata:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected key=value", param_hint="--metadata")
        params[f"metadata.{key}"] = value
    rows = []
    while True:
        page = api.get("/v1/tasks/runs", params={**params, "cursor": cursor})
        if as_json and not all_pages:
            show.emit_json(page)
            return
        if as_json:
            for run in page["runs"]:
                show.emit_json(run)
        rows += page["runs"]
        cursor = page["next_cursor"]
        if not all_pages or cursor is None:
            break
    if not as_json:
        columns = ["run_id", "status", "processor", "attempts", "created_at"]
        show.table(None, columns, [[run.get(c) for c in columns] for run in rows])
        if cursor:
            show.err.print(f"more: --cursor {cursor}")
