"""The `taskq` client commands, run for real (click's runner, in-process) against a
real HTTP gateway and real worker processes; `info` against the real Redis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from taskq import __version__ as taskq_version
from taskq.cli import main
from taskq.gateway import create_app
from tests.conftest import API_KEY, HEADERS, free_port, settings_env, wait_until
from tests.receiver import Answer, serving


@pytest.fixture
def gateway(broker) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The gateway on a real HTTP port, served from a thread of the test process."""
    server = make_server("127.0.0.1", free_port(), create_app(broker.settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def taskq(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(
        main, list(args), env={"TASKQ_URL": url, "TASKQ_API_KEY": API_KEY, **(env or {})}, catch_exceptions=False
    )


def lines(path: Path, values: list[object]) -> Path:
    path.write_text("".join(json.dumps(v) + "\n" for v in values))
    return path


def test_run_prints_the_run_id_and_runs_get_shows_it(gateway, client):
    r = taskq(gateway, "run", "echo", "--input", '{"x": 1}', "--metadata", "team=ops", "--metadata", "n=2")
    assert r.exit_code == 0, r.output
    run_id = r.stdout.strip()
    assert run_id.startswith("trun_")
    got = taskq(gateway, "runs", "get", run_id, "--json")
    run = json.loads(got.stdout)
    assert run["status"] == "queued" and run["metadata"] == {"team": "ops", "n": 2}
    table = taskq(gateway, "runs", "get", run_id)
    assert run_id in table.stdout and "queued" in table.stdout


def test_run_takes_its_input_from_a_file_or_as_text(gateway, client, tmp_path):
    path = tmp_path / "in.json"
    path.write_text('{"from": "file"}')
    run_id = taskq(gateway, "run", "echo", "--input", f"@{path}").stdout.strip()
    assert client.get(f"/v1/tasks/runs/{run_id}/input", headers=HEADERS).json["input"] == {"from": "file"}
    run_id = taskq(gateway, "run", "shout", "--input", "hello there").stdout.strip()
    assert client.get(f"/v1/tasks/runs/{run_id}/input", headers=HEADERS).json["input"] == "hello there"


def test_run_wait_prints_the_output_and_exits_by_how_the_run_ended(gateway, worker):
    worker()
    ok = taskq(gateway, "run", "echo", "--input", '{"answer": 42}', "--wait")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"answer": 42}
    bad = taskq(gateway, "run", "broken", "--input", '{"message": "no luck"}', "--wait")
    assert bad.exit_code == 1
    assert "failed" in bad.stderr and "no luck" in bad.stderr


def test_run_follow_prints_progress_events_live(gateway, worker):
    worker()
    r = taskq(gateway, "run", "sleep", "--input", '{"seconds": 1.2}', "--follow", "--wait")
    assert r.exit_code == 0, r.output
    assert "s to go" in r.stderr and "status: running" in r.stderr and "status: completed" in r.stderr
    assert json.loads(r.stdout) == {"slept": 1.2}


def test_runs_cancel_events_and_list(gateway, client):
    ids = [taskq(gateway, "run", "echo", "--input", "{}").stdout.strip() for _ in range(3)]
    cancelled = taskq(gateway, "runs", "cancel", ids[0])
    assert cancelled.stdout.strip() == f"{ids[0]} cancelled"
    events = taskq(gateway, "runs", "events", ids[0], "--json")
    statuses = [json.loads(line)["run"]["status"] for line in events.stdout.splitlines()]
    assert statuses == ["queued", "cancelled"]
    page = json.loads(taskq(gateway, "runs", "list", "--json", "--limit", "2").stdout)
    assert [r["run_id"] for r in page["runs"]] == ids[::-1][:2] and page["next_cursor"]
    every = taskq(gateway, "runs", "list", "--json", "--all", "--limit", "2").stdout.splitlines()
    assert [json.loads(line)["run_id"] for line in every] == ids[::-1]
    tagged = taskq(gateway, "run", "echo", "--input", "{}", "--metadata", "team=ops").stdout.strip()
    listed = taskq(gateway, "runs", "list", "--metadata", "team=ops", "--json")
    assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == [tagged]
    only = taskq(gateway, "runs", "list", "--status", "cancelled")
    assert ids[0] in only.stdout and ids[1] not in only.stdout


def test_an_api_error_is_shown_as_the_api_said_it(gateway):
    r = taskq(gateway, "runs", "get", "trun_nope")
    assert r.exit_code == 2 and "404" in r.stderr and "not found" in r.stderr
    r = taskq(gateway, "runs", "get", "trun_nope", env={"TASKQ_API_KEY": "wrong"})
    assert r.exit_code == 2 and "401" in r.stderr
    r = taskq("http://127.0.0.1:9", "runs", "get", "trun_x")
    assert r.exit_code == 2 and "cannot reach" in r.stderr


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(
    "command", [["runs", "get", "trun_x"], ["run", "echo", "--input", "{}"], ["runs", "events", "trun_x"]]
)
def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else(status, command):
    # Given a "gateway" that redirects every call to another origin, which records what it gets
    with serving(respond=lambda req: Answer(200, b"{}")) as elsewhere, serving() as gateway:
        gateway.respond = lambda req: Answer(status, headers={"Location": elsewhere.base + req.path})
        # When a client command calls it with an API key
        r = taskq(gateway.base, *command)
    # Then the redirect is an error naming where it pointed, and the other origin got nothing
    assert r.exit_code == 2, r.output
    assert f"{status}: the server redirected to {elsewhere.base};" in r.stderr and "not followed" in r.stderr
    assert elsewhere.received == []  # so not the key either (before, requests sent x-api-key along on every redirect)


EVIL = "[/x] [link=http://evil]x[/link] [bold]:smile:"


def test_server_text_is_printed_as_plain_text_never_as_markup(gateway, worker):
    def text(out: str) -> str:
        return " ".join(out.split())  # rich wraps long lines off a terminal

    worker()
    # A progress message (research reports "looking up {name}")
    r = taskq(gateway, "run", "research", "--input", json.dumps({"name": EVIL}), "--follow", "--wait")
    assert r.exit_code == 0, r.output
    assert f"looking up {EVIL}" in text(r.stderr)
    # A failed run's error, as --wait shows it and as `runs get` shows it, and metadata
    r = taskq(
        gateway, "run", "broken", "--input", json.dumps({"message": EVIL}), "--metadata", f"note={EVIL}", "--wait"
    )
    assert r.exit_code == 1 and EVIL in text(r.stderr), r.output
    run_id = r.stderr.split()[0]
    shown = taskq(gateway, "runs", "get", run_id)
    assert shown.exit_code == 0 and EVIL in text(shown.stdout)
    assert json.dumps({"note": EVIL}) in text(shown.stdout)
    # An error answer of the API itself
    r = taskq(gateway, "runs", "get", f"trun_{EVIL}")
    assert r.exit_code == 2 and "404" in r.stderr


def test_group_add_sends_batches_of_a_thousand(gateway, client, tmp_path):
    gid = taskq(gateway, "group", "create", "--metadata", "batch=1").stdout.strip()
    inputs = lines(tmp_path / "inputs.jsonl", [{"i": i} for i in range(2500)])
    r = taskq(gateway, "group", "add", gid, "--inputs", str(inputs), "--processor", "echo", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"taskgroup_id": gid, "added": 2500, "num_task_runs": 2500}
    assert client.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json["status"]["num_task_runs"] == 2500
    assert not list(tmp_path.glob("*.progress"))  # done: nothing left to resume
    assert "━" not in r.stderr  # no progress bar when stderr is not a terminal


def test_group_add_of_whole_requests_per_line(gateway, client, tmp_path):
    gid = taskq(gateway, "group", "create").stdout.strip()
    inputs = lines(
        tmp_path / "mixed.jsonl",
        [{"input": {"a": 1}, "processor": "echo"}, {"input": "hi", "processor": "shout", "metadata": {"k": "v"}}],
    )
    assert taskq(gateway, "group", "add", gid, "--inputs", str(inputs)).exit_code == 0
    out = taskq(gateway, "group", "results", gid).stdout.splitlines()
    assert [json.loads(line)["status"] for line in out] == ["queued", "queued"]


def test_group_add_resumes_after_a_batch_that_landed_unrecorded(gateway, client, tmp_path):
    # Given an add interrupted after the API took its first batch but before the
    # client recorded it (the progress file still says "in flight")
    gid = taskq(gateway, "group", "create").stdout.strip()
    inputs = lines(tmp_path / "in.jsonl", [{"i": i} for i in range(1500)])
    first = [{"input": {"i": i}, "processor": "echo"} for i in range(1000)]
    assert client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": first}, headers=HEADERS).status_code == 200
    progress = tmp_path / f"in.jsonl.{gid}.progress"
    progress.write_text(
        json.dumps({"done_lines": 0, "runs_added": 0, "in_flight": {"runs_before": 0, "runs": 1000, "next_line": 1000}})
    )
    # When the same command runs again
    r = taskq(gateway, "group", "add", gid, "--inputs", str(inputs), "--processor", "echo", "--json")
    # Then only the rest is sent: every line once
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["num_task_runs"] == 1500 and "resuming after line 1000" in r.stderr


def test_group_add_resends_a_batch_that_never_landed(gateway, client, tmp_path):
    gid = taskq(gateway, "group", "create").stdout.strip()
    inputs = lines(tmp_path / "in.jsonl", [{"i": i} for i in range(10)])
    progress = tmp_path / f"in.jsonl.{gid}.progress"
    progress.write_text(
        json.dumps({"done_lines": 0, "runs_added": 0, "in_flight": {"runs_before": 0, "runs": 10, "next_line": 10}})
    )
    r = taskq(gateway, "group", "add", gid, "--inputs", str(inputs), "--processor", "echo", "--json")
    assert json.loads(r.stdout)["num_task_runs"] == 10


def test_group_add_names_the_bad_line_keeps_what_landed_and_resumes(gateway, client, tmp_path):
    gid = taskq(gateway, "group", "create").stdout.strip()
    values: list[object] = [{"i": i} for i in range(25)]
    values[17] = "not an object"
    inputs = lines(tmp_path / "in.jsonl", values)
    r = taskq(gateway, "group", "add", gid, "--inputs", str(inputs), "--processor", "echo", "--batch-size", "10")
    assert r.exit_code == 2 and "in.jsonl:18:" in r.stderr and "422" in r.stderr
    assert client.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json["status"]["num_task_runs"] == 10
    values[17] = {"i": 17}
    lines(inputs, values)
    r = taskq(
        gateway, "group", "add", gid, "--inputs", str(inputs), "--processor", "echo", "--batch-size", "10", "--json"
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"taskgroup_id": gid, "added": 15, "num_task_runs": 25}


def test_group_watch_and_results_over_gunicorn(gunicorn, worker, tmp_path):
    url = gunicorn()
    worker()
    gid = taskq(url, "group", "create").stdout.strip()
    inputs = lines(
        tmp_path / "in.jsonl",
        [{"input": {"i": i}, "processor": "echo"} for i in range(5)] + [{"input": {}, "processor": "broken"}],
    )
    assert taskq(url, "group", "add", gid, "--inputs", str(inputs)).exit_code == 0
    watched = taskq(url, "group", "watch", gid, "--json")
    assert watched.exit_code == 1  # one run failed
    final = json.loads(watched.stdout)
    assert final["is_active"] is False and final["task_run_status_counts"] == {"completed": 5, "failed": 1}
    out = [json.loads(line) for line in taskq(url, "group", "results", gid).stdout.splitlines()]
    assert [o["output"] for o in out[:5]] == [{"i": i} for i in range(5)]
    assert out[5]["status"] == "failed" and out[5]["output"] is None and out[5]["error"]["message"]


def test_group_watch_exits_0_when_every_run_completed(gunicorn, worker, tmp_path):
    url = gunicorn()
    worker()
    gid = taskq(url, "group", "create").stdout.strip()
    inputs = lines(tmp_path / "in.jsonl", [{"i": i} for i in range(3)])
    assert taskq(url, "group", "add", gid, "--inputs", str(inputs), "--processor", "echo").exit_code == 0
    watched = taskq(url, "group", "watch", gid)
    assert watched.exit_code == 0 and "all 3 runs finished" in watched.stderr


def test_info_shows_queues_workers_and_runs_in_flight(gateway, broker, worker, client):
    env = settings_env(broker.settings)

    def view() -> dict:
        r = CliRunner().invoke(main, ["info", "--json"], env=env, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    for i in range(2):
        client.post("/v1/tasks/runs", json={"input": {"i": i}, "processor": "echo"}, headers=HEADERS)
    client.post("/v1/tasks/runs", json={"input": {"seconds": 30}, "processor": "hold"}, headers=HEADERS)
    before = view()
    (default,) = [q for q in before["queues"] if q["name"] == "default"]
    assert default["depth"] == 3 and default["oldest_age_s"] is not None and default["oldest_age_s"] >= 0
    assert [x for x in before["workers"] if x["name"] != "test-worker"] == [] and before["running"] == 0

    w = worker(name="w-info", concurrency=3)
    shown = wait_until(lambda: (v := view())["running"] == 1 and not v["queues"][0]["depth"] and v)
    (me,) = [x for x in shown["workers"] if x["name"] == "w-info"]
    assert me["in_flight"] == 1 and me["concurrency"] == 3
    # its state as of its last beat (every heartbeat_s): busy, as it holds a run
    wait_until(lambda: [x["state"] for x in view()["workers"] if x["name"] == "w-info"] == ["busy"])
    table = CliRunner().invoke(main, ["info"], env=env)
    assert "w-info" in table.stdout and "default" in table.stdout and "dead-lettered 0" in table.stdout
    w.kill()


def test_info_says_which_redis_it_read_with_the_password_masked(broker, redis_server):
    # Given a Redis user with a password, and taskq's data in database 0
    broker.redis.execute_command("ACL", "SETUSER", "reader", "on", ">s3cret-pw", "~*", "&*", "+@all")
    try:
        url = f"redis://reader:s3cret-pw@127.0.0.1:{redis_server.port}/0"
        env = {**settings_env(broker.settings), "REDIS_URL": url}
        for args in (["info"], ["info", "--json"]):
            r = CliRunner().invoke(main, args, env=env)
            # Then the first thing said is which Redis, with the password masked
            assert r.exit_code == 0, r.output
            assert r.stderr.splitlines()[0] == f"Redis redis://reader:***@127.0.0.1:{redis_server.port}/0 (REDIS_URL)"
            assert "s3cret-pw" not in r.output
        # and another database is named as such, however the URL spells it
        other = CliRunner().invoke(
            main, ["info"], env={**env, "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}?db=3"}
        )
        assert other.stderr.splitlines()[0] == f"Redis redis://127.0.0.1:{redis_server.port}/3 (REDIS_URL)"
    finally:
        broker.redis.execute_command("ACL", "DELUSER", "reader")


def test_info_fails_in_one_line_when_redis_cannot_be_reached(broker):
    port = free_port()  # nothing listens there
    for url, shown in [
        (f"redis://:s3cret-pw@127.0.0.1:{port}/2", f"redis://:***@127.0.0.1:{port}/2"),
        ("127.0.0.1:6379", None),  # no scheme: a REDIS_URL redis-py cannot parse
    ]:
        r = CliRunner().invoke(main, ["info"], env={**settings_env(broker.settings), "REDIS_URL": url})
        assert r.exit_code != 0 and r.stdout == ""
        (line,) = r.stderr.splitlines()
        assert line.startswith("Error: ") and "REDIS_URL" in line and "s3cret-pw" not in line
        assert shown is None or shown in line


def run_worker(settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """`taskq worker` that is expected to refuse to start: a worker that serves
    instead never returns, and the timeout fails the test."""
    return subprocess.run(
        [sys.executable, "-m", "taskq.cli", "worker", *args],
        env=settings_env(settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.processes
def test_a_worker_with_no_app_says_so_and_exits(broker, tmp_path):
    # Given no TASKQ_APP and no --app (the example app importable all the same)
    done = run_worker(broker.settings.replace(app=()), tmp_path)
    # Then it refuses in one line, and never registers
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert "TASKQ_APP" in line and "--app" in line
    assert not broker.redis.smembers("rq:workers")


@pytest.mark.processes
def test_a_worker_names_an_app_module_it_cannot_import(broker, tmp_path):
    for app in ("no_such_app", "workers.no_such_module"):
        done = run_worker(broker.settings, tmp_path, "--app", f"workers.app,{app}")
        assert done.returncode != 0
        (line,) = done.stderr.splitlines()
        assert repr(app) in line and str(tmp_path) in line and "PYTHONPATH" in line


def test_a_worker_says_at_start_which_processors_it_serves(broker, worker, redis_server):
    w = worker()
    wait_until(lambda: "serving" in w.output())
    (line,) = [x for x in w.output().splitlines() if "serving" in x]
    served = line.split("serving ", 1)[1]
    assert f"taskq {taskq_version} worker" in line and "app workers.app" in line
    for name in ("echo", "research", "sleep", "shout"):
        assert re.search(rf"\b{name}\b", served)
    assert "(built in: http)" in served and f"Redis redis://127.0.0.1:{redis_server.port}/0" in line
