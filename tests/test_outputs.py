"""Output files: saved by processors in real worker processes, listed on the run,
served by a real gunicorn at signed URLs (directory storage) or presigned by a real
S3-compatible server the suite starts (moto's standalone server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from taskq import Output, delivery, keys, outputs
from taskq.outputs import signing
from taskq.outputs.record import OutputRejected, _secret
from tests.conftest import API_KEY, HEADERS, ROOT, free_port, wait_until


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
    record = broker.redis.hgetall(keys.run(run_id))
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
    settings = broker.settings.replace(output_dir=str(out_dir), max_output_file_bytes=1000, max_outputs_bytes_per_run=1500)
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
        empty.size


def test_files_are_deleted_when_their_run_expires(broker, client, worker, out_dir):
    settings = broker.settings.replace(output_dir=str(out_dir), retention_s=2)
    worker("threads", settings=settings)
    run_id = submit(client, "render", {"files": {"keep.txt": "for a while"}})
    assert client.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS).status_code == 200
    assert files_of(out_dir, run_id) == ["keep.txt"]
    assert broker.redis.zscore(keys.OUTPUTS_EXPIRING, run_id) is not None

    wait_until(lambda: not (out_dir / run_id).exists(), timeout_s=20)
    assert broker.redis.zscore(keys.OUTPUTS_EXPIRING, run_id) is None


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
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
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
    r = api.post("/v1/tasks/runs", json={"processor": "render", "input": {"files": {"data.json": '{"a": 1}'}}}, headers=HEADERS)
    run_id = r.json["run_id"]
    got = api.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 200, got.json
    (listed,) = got.json["run"]["outputs"]
    assert listed["name"] == "data.json" and listed["content_type"] == "application/json"
    assert listed["url"].startswith(os.environ["AWS_ENDPOINT_URL"] + "/taskq-test/runs/" + run_id + "/")
    fetched = requests.get(listed["url"])
    assert fetched.status_code == 200 and fetched.content == b'{"a": 1}'
    assert fetched.headers["Content-Type"] == "application/json"
    assert requests.get(got.json["output"]["content"]["urls"]["data.json"]).content == b'{"a": 1}'
    # (moto does not check presigned signatures or expiry: that is the real store's
    # promise, not taskq's, so it is not asserted here)

    def stored() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket="taskq-test", Prefix=f"runs/{run_id}/").get("Contents", [])]

    assert len(stored()) == 1
    wait_until(lambda: not stored(), timeout_s=30)
