"""/v1/outputs/{run_id}/{uid}/{name}: output files of the directory storage, at
signed, expiring URLs that need no API key (a browser or curl can fetch them).

A tampered URL is 403, an expired one 410; a file the run does not list (refused,
cut short, or expired) is 404. `Range` and conditional requests are honoured and
the file is streamed from disk, never read whole.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from flask import Blueprint, Response, request, send_file

from .. import errors, outputs
from ..broker import translated
from ..outputs.directory import URL_PREFIX, DirectoryStorage
from ..outputs.signing import verify
from . import broker

bp = Blueprint("outputs", __name__, url_prefix=URL_PREFIX.rstrip("/"))

PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


def blueprints() -> list[Blueprint]:
    return [bp]


@bp.get("/<run_id>/<uid>/<name>")
def download(run_id: str, uid: str, name: str) -> Response:
    store = outputs.record.storage(broker())
    if not isinstance(store, DirectoryStorage):
        raise errors.NotFound("output files are served by their object store, not here")
    if not all(PART.fullmatch(p) for p in (run_id, uid, name)):
        raise errors.NotFound("no such output file")
    key = f"{run_id}/{uid}/{name}"
    verify(store.secret, URL_PREFIX + quote(key), request.args.get("expires"), request.args.get("sig"))
    with translated():
        entry = outputs.record.find(broker(), run_id, key)
    path = store.path(key)
    if entry is None or not path.is_file():
        raise errors.NotFound("no such output file (the run may have expired)")
    return send_file(path, mimetype=entry["content_type"], conditional=True, download_name=name, max_age=0)
