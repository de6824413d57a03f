"""Output files: saved by processors in real worker processes, listed on the run,
served by a real gunicorn at signed URLs (directory storage) or presigned by a real
S3-compatible server the suite starts (moto's standalone server)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from taskq import Output, keys, outputs
from taskq.errors import OutputRejected
from taskq.outputs import signing
from taskq.outputs.record import _secret
from taskq.record import RunRecord
from taskq.webhooks import delivery
from tests.conftest import API_KEY, HEADERS, OTHER_KEY, ROOT, free_port, wait_until


def submit(client, processor, input):  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor}, headers=HEADERS)
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def files_of(root: Path, run_id: str) -> list[str]:
    return sorted(p.name for p in (root / run_id).rglob("*") if p.is_file()) if (root / run_id).exists() else []


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def test_saved_files_are_listed_and_served_at_signed_urls_without_an_api_key(broker, worker, gunicorn, out_dir):
    settings = broker.settings.replace(output_dir=str(out_dir))
    worker("threads", settings=settings)
    base = gunicorn(settings)
    api = requests.Session()
    api.headers["x-api-key"] = API_KEY
    body = {"processor": "render", "input": {"files": {"table.csv": "a,b\n1,2\n"}, "path_text": "hello world"}}
    run_id = api.post(base + "/v1/tasks/runs", json=body).json()["run_id"]

    got = api.get(f"{base}/v1/tasks/runs/{run_id}/result?timeout=20")
    assert got.status_code == 200, got.text
    listed = {o["name"]: o for o in got.json()["run"]["outputs"]}
    assert set(listed) == {"table.csv", "result.txt"}
    assert listed["table.csv"]["size"] == 8 and listed["table.csv"]["content_type"] == "text/csv"
    assert listed["result.txt"]["size"] == 11 and listed["result.txt"]["content_type"] == "text/plain"
    assert all(o["url"].startswith("/v1/outputs/") and o["expires_at"].endswith("Z") for o in listed.values())
    assert api.get(f"{base}/v1/tasks/runs/{run_id}").json()["outputs"][0]["name"] == "table.csv"

    # Anyone holding a URL can fetch it: no API key; the content type and Range honoured
    url = base + listed["result.txt"]["url"]
    plain = requests.get(url)
    assert plain.status_code == 200 and plain.content == b"hello world"
    assert plain.headers["Content-Type"].startswith("text/plain")
    part = requests.get(url, headers={"Range": "bytes=6-"})
    assert part.status_code == 206 and part.content == b"world"
    # The processor's own public_url() is just as good
    made_by_worker = got.json()["output"]["content"]["urls"]["table.csv"]
    assert requests.get(base + made_by_worker).content == b"a,b\n1,2\n"

    # A tampered URL is 403, an expired one 410
    path, query = url.split("?")
    q = {k: v[0] for k, v in parse_qs(query).items()}
    assert requests.get(f"{path}?expires={q['expires']}&sig={q['sig'][:-2]}xx").status_code == 403
    assert requests.get(f"{path}?expires={int(q['expires']) + 1}&sig={q['sig']}").status_code == 403
    assert requests.get(path.replace("result.txt", "table.csv") + "?" + query).status_code == 403
    assert requests.get(path).status_code == 403
    assert requests.get(f"{path}?expires={q['expires']}&sig=%C3%A2%F0%BD%94%A6").status_code == 403
    assert requests.get(f"{path}?expires=%D9%A3&sig={q['sig']}").status_code == 403  # a non-ASCII digit
    local_path = urlsplit(path).path
    expired = signing.sign(_secret(broker), local_path, -5)
    gone = requests.get(base + expired)
    assert gone.status_code == 410 and "expired" in gone.json()["error"]["message"]

    # Webhook payloads and group streams carry the same list, with URLs made then
    record = RunRecord(broker.redis.hgetall(keys.run(run_id)))
    payload = json.loads(delivery.payload(record, "completed", 0, broker))
    assert {o["name"] for o in payload["data"]["outputs"]} == {"table.csv", "result.txt"}
    assert requests.get(base + payload["data"]["outputs"][0]["url"]).status_code == 200


def test_group_run_streams_list_outputs(broker, client, worker, out_dir):
    settings = broker.settings.replace(output_dir=str(out_dir))
    worker("threads", settings=settings)
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    inputs = [{"processor": "render", "input": {"files": {"one.txt": "1"}}}]
    (run_id,) = client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=HEADERS).json["run_ids"]
    assert client.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS).status_code == 200
    stream = client.get(f"/v1/tasks/groups/{gid}/runs", headers=HEADERS).get_data(as_text=True)
    event = json.loads(next(line[6:] for line in stream.splitlines() if line.startswith("data: ")))
    (listed,) = event["run"]["outputs"]
    assert listed["name"] == "one.txt" and listed["size"] == 1 and "sig=" in listed["url"]


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_files_over_a_limit_fail_the_run_and_nothing_of_them_is_kept(broker, client, worker, out_dir, pool):
    settings = broker.settings.replace(
        output_dir=str(out_dir), max_output_file_bytes=1000, max_outputs_bytes_per_run=1500
    )
    worker(pool, settings=settings)
    too_big = submit(client, "render", {"size_bytes": 2000})
    two = submit(client, "render", {"files": {"a.txt": "a" * 900, "b.txt": "b" * 900}})

    got = client.get(f"/v1/tasks/runs/{too_big}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 409
    assert "'big.bin' is 2000 bytes, over the limit of 1000 per file" in got.json["error"]["message"]
    assert files_of(out_dir, too_big) == []

    got = client.get(f"/v1/tasks/runs/{two}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 409
    assert "would pass the limit of 1500 bytes (already 900)" in got.json["error"]["message"]
    run = client.get(f"/v1/tasks/runs/{two}", headers=HEADERS).json
    assert [o["name"] for o in run["outputs"]] == ["a.txt"]
    assert files_of(out_dir, two) == ["a.txt"]


def test_only_the_attempt_holding_the_lease_can_record_an_output(broker, client, out_dir):
    import io

    b = broker.__class__(broker.settings.replace(output_dir=str(out_dir)))
    run_id = submit(client, "echo", {})  # queued, held by no attempt
    with pytest.raises(OutputRejected, match="no longer holds"):
        outputs.save(b, run_id, "not-the-token", "x.txt", io.BytesIO(b"x"), 1, "text/plain")
    assert files_of(out_dir, run_id) == []
    assert not broker.redis.hget(keys.run(run_id), "outputs")
    with pytest.raises(OutputRejected, match="output name"):
        outputs.save(b, run_id, "t", "../escape", io.BytesIO(b"x"), 1, "text/plain")
    b.close()
    # A file larger than it said it was (it grew while being saved) is refused too
    small = broker.__class__(broker.settings.replace(output_dir=str(out_dir), max_output_file_bytes=1000))
    with pytest.raises(OutputRejected, match="over the limit of 1000 per file"):
        outputs.save(small, run_id, "t", "grew.bin", io.BytesIO(b"x" * 5000), 10, "application/octet-stream")
    assert [p for p in out_dir.rglob("*") if p.is_file()] == []
    small.close()


def test_a_process_killed_mid_save_leaves_no_visible_file(tmp_path):
    # Given a process saving a file slowly, killed with SIGKILL halfway
    root = tmp_path / "outputs"
    started = tmp_path / "started"
    script = f"""
import time
from taskq.outputs.directory import DirectoryStorage
class Slow:
    sent = 0
    def read(self, n=-1):
        self.sent += 1
        if self.sent == 2:
            open({str(started)!r}, "w").close()
            time.sleep(60)
        return b"x" * 1000
DirectoryStorage({str(root)!r}, "secret").put("trun_x/u1/half.bin", Slow(), "application/octet-stream")
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_until(lambda: started.exists() or proc.poll() is not None, timeout_s=20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # Then no file is visible under its name, only a hidden temporary one
    run_dir = root / "trun_x" / "u1"
    assert not (run_dir / "half.bin").exists()
    assert [p.name.startswith(".saving-") for p in run_dir.iterdir()] == [True]
    # and the run's sweep takes it with the rest
    from taskq.outputs.directory import DirectoryStorage

    DirectoryStorage(str(root), "secret").delete_run("trun_x")
    assert not (root / "trun_x").exists()


def test_an_output_with_neither_path_nor_data_says_so():
    empty = Output(name="report.txt")
    with pytest.raises(ValueError, match="no file"):
        empty.save()
    with pytest.raises(ValueError, match="no file"):
        assert empty.size is None


def test_files_are_deleted_when_their_run_expires(broker, client, worker, out_dir):
    settings = broker.settings.replace(output_dir=str(out_dir), retention_s=2)
    worker("threads", settings=settings)
    run_id = submit(client, "render", {"files": {"keep.txt": "for a while"}})
    assert client.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS).status_code == 200
    assert files_of(out_dir, run_id) == ["keep.txt"]
    assert broker.redis.zscore(keys.outputs_expiring(0), run_id) is not None

    wait_until(lambda: not (out_dir / run_id).exists(), timeout_s=20)
    assert broker.redis.zscore(keys.outputs_expiring(0), run_id) is None


# --- Serving: what a browser does with a file -------------------------------------------


@pytest.fixture
def local(broker, out_dir):  # type: ignore[no-untyped-def]
    """Settings with files in `out_dir`, and a gateway (in process) serving them."""
    from taskq.gateway import create_app

    settings = broker.settings.replace(output_dir=str(out_dir))
    app = create_app(settings)
    yield settings, app.test_client()
    app.extensions["taskq"].close()


def download(api, url, **kwargs):  # type: ignore[no-untyped-def]
    """GETs an output file through the in-process gateway, read whole and closed."""
    got = api.get(url, **kwargs)
    got.get_data()
    got.close()
    return got


def rendered(local, drain, input):  # type: ignore[no-untyped-def]
    """Runs `render` on `input` to its end in process; returns the TaskRun."""
    settings, api = local
    run_id = submit(api, "render", input)
    drain(settings)
    return api.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json


ACTIVE_TYPES = [
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "application/pdf",
    "text/javascript",
    "application/octet-stream",
    "TEXT/HTML",
    "text/html; charset=utf-8",
    "multipart/x-mixed-replace; boundary=x",
]
INERT_TYPES = [
    "text/plain",
    "text/csv",
    "application/json",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "text/plain; charset=utf-8",
]
SANDBOX = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def test_a_file_a_browser_could_run_is_an_attachment_with_nosniff_and_a_sandbox(local, drain):
    # Given files whose type a browser would render as a document that runs script:
    # by their name (.html, .svg), or saved with such a content type
    script = "<script>fetch('/dashboard')</script>"
    files = {"page.html": script, "pic.svg": f"<svg xmlns='http://www.w3.org/2000/svg'>{script}</svg>"}
    types = {}
    for i, content_type in enumerate(ACTIVE_TYPES):
        files[f"typed-{i}.txt"] = script
        types[f"typed-{i}.txt"] = content_type
    run = rendered(local, drain, {"files": files, "types": types})
    assert run["status"] == "completed", run
    listed = {o["name"]: o for o in run["outputs"]}
    assert listed["page.html"]["content_type"] == "text/html" and listed["pic.svg"]["content_type"] == "image/svg+xml"

    # Then every one downloads as an attachment, never sniffed, sandboxed without script
    for name in files:
        got = download(local[1], listed[name]["url"])
        assert got.status_code == 200 and got.data == files[name].encode(), name
        assert got.headers["Content-Disposition"] == f'attachment; filename="{name}"', name
        assert got.headers["X-Content-Type-Options"] == "nosniff", name
        assert got.headers["Content-Security-Policy"] == SANDBOX, name
    # and Range still works on them
    part = download(local[1], listed["page.html"]["url"], headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.data == b"<script>"
    assert (
        part.headers["Content-Disposition"].startswith("attachment")
        and part.headers["X-Content-Type-Options"] == "nosniff"
    )


def test_an_inert_file_is_shown_inline_but_still_with_nosniff_and_a_sandbox(local, drain):
    files = {"notes.txt": "plain", "dot.png": "png bytes"}
    types = {}
    for i, content_type in enumerate(INERT_TYPES):
        files[f"inert-{i}.bin"] = "data"
        types[f"inert-{i}.bin"] = content_type
    run = rendered(local, drain, {"files": files, "types": types})
    listed = {o["name"]: o for o in run["outputs"]}
    assert listed["notes.txt"]["content_type"] == "text/plain" and listed["dot.png"]["content_type"] == "image/png"
    for name in files:
        got = download(local[1], listed[name]["url"])
        assert got.status_code == 200 and got.data == files[name].encode(), name
        assert got.headers["Content-Type"].lower().startswith(listed[name]["content_type"].lower()), name
        assert got.headers["Content-Disposition"] == f'inline; filename="{name}"', name
        assert got.headers["X-Content-Type-Options"] == "nosniff", name
        assert got.headers["Content-Security-Policy"] == SANDBOX, name


def test_serving_is_one_decision_for_every_type():
    for content_type in ACTIVE_TYPES:
        assert not outputs.serving("f.bin", content_type).inline, content_type
    for content_type in INERT_TYPES:
        assert outputs.serving("f.bin", content_type).inline, content_type
    broken = outputs.serving("f.html", "text/html\r\nSet-Cookie: a=b")
    assert (broken.content_type, broken.inline) == ("application/octet-stream", False)


BAD_TYPES = [
    "text/plain\r\nSet-Cookie: session=stolen",
    "text/html\n",
    "text/plain\r",
    "text/plain\x00",
    "text/plain\x7f",
    "text",
    "text/",
    "/plain",
    "text/plain/x",
    "text/ plain",
    "text /plain",
    "text/plain ",
    "text/plain; charset",
    'text/plain; charset="utf-8',
    "text/plain; charset=utf 8",
    "text/plain;\tcharset=utf-8",
    "tëxt/plain",
    "text/plain; charset=\u2028",
    "a" * 250 + "/plain",
]


@pytest.mark.parametrize("bad", BAD_TYPES)
def test_a_content_type_that_is_not_a_media_type_fails_the_save_and_keeps_nothing(broker, local, drain, out_dir, bad):
    # Refused where the Output is made, before any run is needed
    with pytest.raises(OutputRejected, match="is not a media type"):
        Output.from_bytes("x.txt", b"x", content_type=bad)
    # In a run: the run fails saying why, and nothing of the file is stored or listed
    settings, api = local
    run_id = submit(api, "render", {"files": {"x.txt": "x"}, "content_type": bad})
    drain(settings)
    run = api.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "failed"
    assert "'x.txt': content type" in run["error"]["message"] and "is not a media type" in run["error"]["message"]
    assert "\r" not in run["error"]["message"] and "\n" not in run["error"]["message"]
    assert run["outputs"] == [] and run["outputs_count"] == 0
    assert files_of(out_dir, run_id) == []
    assert RunRecord(broker.redis.hgetall(keys.run(run_id))).outputs_count == 0


def test_the_save_itself_refuses_a_bad_content_type(broker, client, out_dir):
    import io

    b = broker.__class__(broker.settings.replace(output_dir=str(out_dir)))
    run_id = submit(client, "echo", {})
    broker.redis.hset(keys.run(run_id), mapping={"status": "running", "token": "t"})
    for bad in BAD_TYPES:
        with pytest.raises(OutputRejected, match="is not a media type"):
            outputs.save(b, run_id, "t", "x.txt", io.BytesIO(b"x"), 1, bad)
    assert [p for p in out_dir.rglob("*") if p.is_file()] == []
    assert broker.redis.hget(keys.run(run_id), "outputs_count") is None
    b.close()


def test_a_run_recorded_by_an_earlier_version_is_listed_served_safely_and_kept(broker, local, out_dir):
    """Records made before this version list their files as one JSON list on the run,
    and could hold a content type with CR/LF in it: listed, served without a 500 (as
    an attachment of application/octet-stream), and moved to the new listing on the
    run's next save."""
    import io

    settings, api = local
    run_id = submit(api, "echo", {})
    entries = []
    for name, content_type in [("page.html", "text/html\r\nSet-Cookie: session=stolen"), ("ok.txt", "text/plain")]:
        key = f"{run_id}/{'0' * 15}{len(entries)}/{name}"
        (out_dir / key).parent.mkdir(parents=True)
        (out_dir / key).write_bytes(b"<script>1</script>")
        entries.append({"name": name, "key": key, "size": 18, "content_type": content_type, "saved_ms": 1})
    broker.redis.hset(
        keys.run(run_id),
        mapping={"status": "running", "token": "t", "outputs": json.dumps(entries), "has_outputs": "1"},
    )

    run = api.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert [o["name"] for o in run["outputs"]] == ["page.html", "ok.txt"] and run["outputs_count"] == 2
    got = download(api, run["outputs"][0]["url"])
    assert got.status_code == 200 and got.data == b"<script>1</script>"
    assert got.headers["Content-Type"] == "application/octet-stream" and "Set-Cookie" not in got.headers
    assert got.headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert got.headers["X-Content-Type-Options"] == "nosniff" and got.headers["Content-Security-Policy"] == SANDBOX
    assert download(api, run["outputs"][1]["url"]).headers["Content-Disposition"].startswith("inline")
    paged = api.get(f"/v1/tasks/runs/{run_id}/outputs?limit=1", headers=HEADERS).json
    rest = api.get(f"/v1/tasks/runs/{run_id}/outputs?cursor={paged['next_cursor']}", headers=HEADERS).json
    assert [o["name"] for o in paged["outputs"] + rest["outputs"]] == ["page.html", "ok.txt"]

    # The next save moves the list to the run's own listing, replacing by name as before
    b = broker.__class__(settings)
    outputs.save(b, run_id, "t", "ok.txt", io.BytesIO(b"new"), 3, "text/plain")
    outputs.save(b, run_id, "t", "more.txt", io.BytesIO(b"more"), 4, "text/plain")
    b.close()
    record = broker.redis.hgetall(keys.run(run_id))
    assert "outputs" not in record
    assert (record["outputs_count"], record["outputs_bytes"]) == ("3", str(18 + 3 + 4))
    run = api.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert [(o["name"], o["size"]) for o in run["outputs"]] == [("page.html", 18), ("ok.txt", 3), ("more.txt", 4)]
    assert download(api, run["outputs"][1]["url"]).data == b"new"
    assert download(api, run["outputs"][0]["url"]).status_code == 200


# --- How many files a run may have, and how they are listed -----------------------------


def test_a_run_past_its_file_cap_fails_naming_the_limit_and_keeps_the_files_before(broker, local, drain, out_dir):
    settings, api = local
    settings = settings.replace(max_outputs_per_run=5)
    run_id = submit(api, "render", {"many": 6})
    drain(settings)
    run = api.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "failed"
    assert "the run already has 5 output files, the limit of 5 files per run" in run["error"]["message"]
    assert run["outputs_count"] == 5 and len(run["outputs"]) == 5
    assert files_of(out_dir, run_id) == [f"many-{i:05d}.txt" for i in range(5)]

    # A file saved again under a name it has is a replacement, not one more file
    files = {f"f{i}.txt": "x" for i in range(5)}
    full = submit(api, "render", {"files": files, "again": {"f0.txt": "again"}})
    drain(settings)
    run = api.get(f"/v1/tasks/runs/{full}", headers=HEADERS).json
    assert run["status"] == "completed", run["error"]
    assert run["outputs_count"] == 5


def test_saving_a_file_again_under_its_name_keeps_the_count_and_total_right(broker, local, drain, out_dir):
    settings, api = local
    settings = settings.replace(max_outputs_bytes_per_run=12)
    # 8 + 2 bytes, then a.txt again as 9: 11 in all, within 12 (the replaced 8 no longer count)
    run_id = submit(api, "render", {"files": {"a.txt": "x" * 8, "b.txt": "yy"}, "again": {"a.txt": "z" * 9}})
    drain(settings)
    run = api.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "completed", run["error"]
    assert [(o["name"], o["size"]) for o in run["outputs"]] == [("b.txt", 2), ("a.txt", 9)]
    assert run["outputs_count"] == 2 and run["outputs_next"] is None
    record = broker.redis.hgetall(keys.run(run_id))
    assert (record["outputs_count"], record["outputs_bytes"]) == ("2", "11")
    # The replaced bytes are gone from the storage, the new ones served
    assert files_of(out_dir, run_id) == ["a.txt", "b.txt"]
    assert download(api, run["outputs"][1]["url"]).data == b"z" * 9
    # and one byte more than the limit is still refused
    over = submit(api, "render", {"files": {"a.txt": "x" * 8, "b.txt": "yy"}, "again": {"a.txt": "z" * 11}})
    drain(settings)
    run = api.get(f"/v1/tasks/runs/{over}", headers=HEADERS).json
    assert run["status"] == "failed" and "would pass the limit of 12 bytes (already 2)" in run["error"]["message"]


def test_a_run_with_more_files_than_a_page_is_bounded_and_pages_through_all(broker, local, drain, out_dir):
    settings, api = local
    run_id = submit(api, "render", {"many": 250})
    drain(settings)
    names = [f"many-{i:05d}.txt" for i in range(250)]

    # The TaskRun lists the first page and says there are more
    run = api.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "completed", run["error"]
    assert [o["name"] for o in run["outputs"]] == names[:100]
    assert run["outputs_count"] == 250 and run["outputs_next"].startswith(f"/v1/tasks/runs/{run_id}/outputs?cursor=")
    # The run's record holds counters, not a list of its files
    record = broker.redis.hgetall(keys.run(run_id))
    assert "outputs" not in record and (record["outputs_count"], record["outputs_bytes"]) == ("250", "250")
    assert max(len(v) for v in record.values()) < 1000
    assert broker.redis.hlen(keys.run_outputs(run_id)) == broker.redis.zcard(keys.run_outputs_order(run_id)) == 250

    # Following outputs_next, and paging with any limit, gives every file exactly once
    seen = [o["name"] for o in run["outputs"]]
    page = api.get(run["outputs_next"], headers=HEADERS).json
    seen += [o["name"] for o in page["outputs"]]
    while page["next_cursor"]:
        page = api.get(f"/v1/tasks/runs/{run_id}/outputs?cursor={page['next_cursor']}", headers=HEADERS).json
        seen += [o["name"] for o in page["outputs"]]
    assert seen == names
    for limit in (1, 7, 250, 1000):
        got, cursor = [], ""
        while True:
            page = api.get(f"/v1/tasks/runs/{run_id}/outputs?limit={limit}&cursor={cursor}", headers=HEADERS).json
            assert len(page["outputs"]) <= limit
            got += page["outputs"]
            if not (cursor := page["next_cursor"]):
                break
        assert [o["name"] for o in got] == names, limit
    # with URLs that work
    assert all(download(api, o["url"]).data == b"x" for o in got)

    # A bad limit or cursor is a 422 naming it
    for query, field in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("limit=-1", "limit"),
        ("cursor=abc", "cursor"),
        ("cursor=-1", "cursor"),
        ("cursor=1e3", "cursor"),
        ("cursor=" + "9" * 16, "cursor"),
    ]:
        bad = api.get(f"/v1/tasks/runs/{run_id}/outputs?{query}", headers=HEADERS)
        assert bad.status_code == 422 and bad.json["error"]["message"].startswith(field), query


def test_another_tenant_cannot_list_a_runs_outputs(local, drain):
    settings, api = local
    run_id = submit(api, "render", {"files": {"mine.txt": "secret"}})
    drain(settings)
    assert api.get(f"/v1/tasks/runs/{run_id}/outputs", headers=HEADERS).status_code == 200
    other = api.get(f"/v1/tasks/runs/{run_id}/outputs", headers={"x-api-key": OTHER_KEY})
    assert other.status_code == 404 and "mine.txt" not in other.get_data(as_text=True)
    assert api.get(f"/v1/tasks/runs/{run_id}/outputs").status_code == 401
    assert api.get("/v1/tasks/runs/trun_0123/outputs", headers=HEADERS).status_code == 404


def test_a_runs_listing_expires_with_it_and_its_webhook_lists_the_first_page(broker, local, drain):
    settings, api = local
    body = {"processor": "render", "input": {"many": 120}, "webhook": {"url": "http://127.0.0.1:9/hook"}}
    run_id = api.post("/v1/tasks/runs", json=body, headers=HEADERS).json["run_id"]
    drain(settings)
    for key in (keys.run_outputs(run_id), keys.run_outputs_order(run_id)):
        assert 0 < broker.redis.ttl(key) <= settings.retention_s, key
    # The dispatcher's claim carries what the payload needs to list the files
    (claim,) = [c for c in delivery.take_due(broker, 0, 10, 30, max_skips=10).claims if c.run_id == run_id]
    data = json.loads(delivery.payload(claim.run, claim.status, claim.created_ms, broker))["data"]
    assert len(data["outputs"]) == 100 and data["outputs_count"] == 120 and data["outputs_next"]


# --- S3-compatible storage ------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """moto's standalone S3 server on a free port, with a bucket; the AWS variables
    set for this process and the workers it starts."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if binary is None:
        pytest.fail("moto_server is not installed: run .ci/bootstrap")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)

    def up() -> bool:
        try:
            return requests.get(endpoint, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(up, timeout_s=30)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="taskq-test")
    yield client
    proc.terminate()
    proc.wait(10)
    log.close()


def test_s3_storage_presigns_urls_and_deletes_expired_runs_files(broker, client, worker, s3):
    settings = broker.settings.replace(output_url="s3://taskq-test/runs", retention_s=3)
    worker("threads", settings=settings)
    from taskq.gateway import create_app

    api = create_app(settings).test_client()
    files = {"data.json": '{"a": 0}', "page.html": "<script>1</script>", "pic.svg": "<svg/>", "note.txt": "<b>"}
    body = {
        "processor": "render",
        "input": {"files": files, "types": {"note.txt": "text/html"}, "again": {"data.json": '{"a": 1}'}},
    }
    run_id = api.post("/v1/tasks/runs", json=body, headers=HEADERS).json["run_id"]
    got = api.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 200, got.json
    listed = {o["name"]: o for o in got.json["run"]["outputs"]}
    assert listed["data.json"]["content_type"] == "application/json"
    assert listed["data.json"]["url"].startswith(os.environ["AWS_ENDPOINT_URL"] + "/taskq-test/runs/" + run_id + "/")
    fetched = requests.get(listed["data.json"]["url"])
    assert fetched.status_code == 200 and fetched.content == b'{"a": 1}'
    assert fetched.headers["Content-Type"] == "application/json"
    assert requests.get(got.json["output"]["content"]["urls"]["data.json"]).content == b'{"a": 1}'
    # (moto does not check presigned signatures or expiry: that is the real store's
    # promise, not taskq's, so it is not asserted here)

    # The store is told, in the signed URL, to serve a type a browser could run as an
    # attachment, and an inert one inline
    for name, how in [
        ("page.html", "attachment"),
        ("pic.svg", "attachment"),
        ("note.txt", "attachment"),
        ("data.json", "inline"),
    ]:
        query = parse_qs(urlsplit(listed[name]["url"]).query)
        assert query["response-content-disposition"] == [f'{how}; filename="{name}"'], name
        assert query["response-content-type"] == [listed[name]["content_type"]], name
        fetched = requests.get(listed[name]["url"])
        assert fetched.headers["Content-Disposition"] == f'{how}; filename="{name}"', name

    def stored() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket="taskq-test", Prefix=f"runs/{run_id}/").get("Contents", [])]

    assert len(stored()) == 4  # the data.json replaced is deleted
    wait_until(lambda: not stored(), timeout_s=30)


def test_payloads_offloaded_to_s3_read_back_and_go_with_the_run(broker, drain, s3):
    from taskq.gateway import create_app

    # Given S3 as the output storage and a run whose input and output pass the threshold
    settings = broker.settings.replace(output_url="s3://taskq-test/runs", payload_offload_bytes=2000, retention_s=1)
    app = create_app(settings)
    try:
        api = app.test_client()
        blob = {"blob": base64.b64encode(os.urandom(3000)).decode()}
        run_id = submit(api, "echo", blob)
        drain(settings)

        # Then both are objects in the bucket, and read back as given
        stored = [o["Key"] for o in s3.list_objects_v2(Bucket="taskq-test").get("Contents", [])]
        assert sorted(k.split("/")[3].split("-")[0] for k in stored) == ["input", "output"]
        assert api.get(f"/v1/tasks/runs/{run_id}/input", headers=HEADERS).json["input"] == blob
        assert api.get(f"/v1/tasks/runs/{run_id}/result", headers=HEADERS).json["output"]["content"] == blob
    finally:
        app.extensions["taskq"].close()

    # And when the run expires, the sweep deletes them
    sweeper = broker.__class__(settings)
    try:
        wait_until(lambda: outputs.sweep(sweeper, 0), timeout_s=10)
    finally:
        sweeper.close()
    assert not s3.list_objects_v2(Bucket="taskq-test").get("Contents")
