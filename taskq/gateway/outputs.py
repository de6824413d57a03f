"""Output files over HTTP.

/v1/outputs/{run_id}/{uid}/{name}: files of the directory storage, at signed,
expiring URLs that need no API key (a browser or curl can fetch them). A tampered
URL is 403, an expired one 410; a file the run does not list (refused, cut short,
replaced, or expired) is 404. `Range` and conditional requests are honoured and the
file is streamed from disk, never read whole. Its type, disposition and security
headers are those outputs.serving decides: a file never runs as a page of this
origin.

/v1/tasks/runs/{run_id}/outputs: every file of a run (a TaskRun lists the first
page), page by page, with fresh URLs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, request, send_file

from .. import errors, outputs, paths, run
from ..broker import translated
from ..models import OutputFile, OutputFileList
from ..outputs.directory import DirectoryStorage
from ..outputs.names import NAME
from ..outputs.signing import verify
from .http import broker, tenant

bp = Blueprint("outputs", __name__, url_prefix=paths.OUTPUT_FILES.rstrip("/"))
runs_bp = Blueprint("run_outputs", __name__, url_prefix=paths.RUNS)


def blueprints() -> list[Blueprint]:
    return [bp, runs_bp]


@bp.get("/<run_id>/<uid>/<name>")
def download(run_id: str, uid: str, name: str) -> Response:
    store = outputs.record.storage(broker())
    if not isinstance(store, DirectoryStorage):
        raise errors.NotFound("output files are served by their object store, not here")
    if not all(NAME.fullmatch(p) for p in (run_id, uid, name)):
        raise errors.NotFound("no such output file")
    key = f"{run_id}/{uid}/{name}"
    verify(store.secret, paths.OUTPUT_FILES + quote(key), request.args.get("expires"), request.args.get("sig"))
    with translated():
        entry = outputs.record.find(broker(), run_id, key)
    path = store.path(key)
    if entry is None or not path.is_file():
        raise errors.NotFound("no such output file (the run may have expired)")
    how = outputs.serving(name, str(entry.get("content_type") or ""))
    response = send_file(path, mimetype=how.content_type, conditional=True, max_age=0)
    response.headers.update(how.headers())
    return response


@runs_bp.get("/<run_id>/outputs", endpoint="list")
def list_outputs(run_id: str) -> dict[str, Any]:
    """Every output file of the run, in the order saved, `limit` a page (default
    100, at most 1,000), paged by `cursor`."""
    record = run.load(broker(), tenant(), run_id)
    page = outputs.page(broker(), record, _limit(), request.args.get("cursor"))
    listed = OutputFileList(outputs=[OutputFile(**f) for f in page.files], next_cursor=page.next_cursor)
    return listed.model_dump(mode="json")


def _limit() -> int:
    raw = request.args.get("limit") or str(outputs.record.TASK_RUN_PAGE)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
        raise errors.ValidationFailed(
            f"limit: must be an integer between 1 and {outputs.record.MAX_PAGE}", {"field": "limit"}
        )
    return int(raw)
