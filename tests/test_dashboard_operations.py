"""What an operator does and reads on the dashboard, in-process: answering a run's
question, cancelling a group, the runs list's errors and durations, where a run ran,
what each worker serves, and the last hour's chart."""

from __future__ import annotations

import html
import re
import socket

from taskq import history, keys
from taskq.engine.maintenance import Maintenance
from taskq.engine.registration import Registration
from taskq.gateway.dashboard import answer_form
from taskq.gateway.dashboard.formats import compact, duration
from tests.conftest import HEADERS, OTHER_KEY
from tests.test_dashboard import csrf, signed_in

NESTED = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}}}}


def submit(client, processor: str, input: object) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor}, headers=HEADERS)
    assert r.status_code == 202, r.json
    return str(r.json["run_id"])


def status(client, run_id: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json  # type: ignore[no-any-return]


def test_a_question_is_answered_from_the_run_page_with_fields_drawn_from_its_schema(client, drain):
    # Given a run waiting on a flat object question (approved: boolean)
    run_id = submit(client, "spend", {"amount": 12})
    drain()
    signed_in(client)
    page = client.get(f"/dashboard/runs/{run_id}").text
    assert 'id="answer-form"' in page and 'name="f.approved"' in page and "<textarea" not in page
    token = csrf(client, f"/dashboard/runs/{run_id}")
    # When a value that is not a boolean is sent, Then the page says so and the run still waits
    bad = client.post(f"/dashboard/runs/{run_id}/answer", data={"csrf": token, "f.approved": "maybe"})
    assert bad.status_code == 422 and "input.approved" in html.unescape(bad.text)
    assert 'id="answer-error"' in bad.text and status(client, run_id)["status"] == "action_required"
    # When the answer fits, Then the run is queued again and asks its next question (a string)
    ok = client.post(f"/dashboard/runs/{run_id}/answer", data={"csrf": token, "f.approved": "true"})
    assert ok.status_code == 302 and status(client, run_id)["status"] == "queued"
    drain()
    assert 'name="f."' in client.get(f"/dashboard/runs/{run_id}").text  # one field: the whole answer
    client.post(f"/dashboard/runs/{run_id}/answer", data={"csrf": token, "f.": "for the books"})
    drain()
    done = client.get(f"/v1/tasks/runs/{run_id}/result", headers=HEADERS).json
    assert done["output"]["content"] == {"approved": True, "note": "for the books"}
    # An answer to a run that no longer waits is refused with a message, not an error page
    again = client.post(f"/dashboard/runs/{run_id}/answer", data={"csrf": token, "f.": "x"}, follow_redirects=True)
    assert again.status_code == 200 and "not waiting for an answer" in again.text


def test_a_question_of_another_shape_is_answered_as_json_from_a_skeleton(client, drain):
    run_id = submit(client, "ask_badly", {"schema": NESTED})
    drain()
    signed_in(client)
    page = html.unescape(client.get(f"/dashboard/runs/{run_id}").text)
    assert '<textarea name="answer"' in page and '"items": []' in page
    token = csrf(client, f"/dashboard/runs/{run_id}")
    not_json = client.post(f"/dashboard/runs/{run_id}/answer", data={"csrf": token, "answer": "{items: 1"})
    assert not_json.status_code == 422 and "not JSON" in not_json.text
    wrong = client.post(f"/dashboard/runs/{run_id}/answer", data={"csrf": token, "answer": '{"items": ["a"]}'})
    assert wrong.status_code == 422 and "input.items.0" in html.unescape(wrong.text)
    assert '{"items": ["a"]}' in html.unescape(wrong.text)  # what was sent is kept to be corrected
    ok = client.post(f"/dashboard/runs/{run_id}/answer", data={"csrf": token, "answer": '{"items": [1, 2]}'})
    assert ok.status_code == 302 and status(client, run_id)["status"] == "queued"


def test_answering_needs_the_csrf_token_and_the_runs_own_tenant(client, drain):
    run_id = submit(client, "spend", {"amount": 1})
    drain()
    signed_in(client)
    assert client.post(f"/dashboard/runs/{run_id}/answer", data={"f.approved": "true"}).status_code == 403
    token = csrf(client, f"/dashboard/runs/{run_id}")
    cross = client.post(
        f"/dashboard/runs/{run_id}/answer",
        data={"csrf": token, "f.approved": "true"},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403 and status(client, run_id)["status"] == "action_required"
    other = client.application.test_client()
    signed_in(other, OTHER_KEY)
    theirs = other.post(
        f"/dashboard/runs/{run_id}/answer", data={"csrf": csrf(other, "/dashboard"), "f.approved": "true"}
    )
    assert theirs.status_code == 404 and status(client, run_id)["status"] == "action_required"


def test_form_values_are_read_as_the_schema_types_them():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "ok": {"type": "boolean"},
            "pick": {"enum": [1, "two", None]},
            "note": {"type": "string"},
        },
        "required": ["n"],
    }
    form = answer_form.form_for(schema)
    assert form.fields is not None and [f.kind for f in form.fields][:3] == ["integer", "number", "boolean"]
    from werkzeug.datastructures import MultiDict

    sent = MultiDict({"f.n": "3", "f.x": "2.5", "f.ok": "false", "f.pick": "2", "f.note": ""})
    assert answer_form.read(schema, sent) == {"n": 3, "x": 2.5, "ok": False, "pick": None}
    for bad in ({"f.n": "3.5"}, {"f.n": "1", "f.x": "nan"}, {"f.n": "1", "f.pick": "9"}):
        try:
            answer_form.read(schema, MultiDict(bad))
        except Exception as exc:
            assert getattr(exc, "status_code", None) == 422, exc
        else:
            raise AssertionError(bad)
    assert answer_form.skeleton(NESTED) == {"items": []}


def test_a_group_is_cancelled_from_its_page_with_the_csrf_token_only(client, drain):
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    inputs = [{"input": {"n": i}, "processor": "echo"} for i in range(3)]
    client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=HEADERS)
    signed_in(client)
    assert 'id="cancel-group"' in client.get(f"/dashboard/groups/{gid}").text
    # Refused without the token, with a forged one, and from another site
    assert client.post(f"/dashboard/groups/{gid}/cancel", data={}).status_code == 403
    assert client.post(f"/dashboard/groups/{gid}/cancel", data={"csrf": "forged"}).status_code == 403
    token = csrf(client, f"/dashboard/groups/{gid}")
    cross = client.post(f"/dashboard/groups/{gid}/cancel", data={"csrf": token}, headers={"Origin": "null"})
    assert cross.status_code == 403
    counts = client.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json["status"]["task_run_status_counts"]
    assert counts.get("queued") == 3
    # Accepted with it: every queued run is cancelled
    r = client.post(f"/dashboard/groups/{gid}/cancel", data={"csrf": token}, follow_redirects=True)
    assert r.status_code == 200 and "group cancelled: all 3 runs finished" in r.text
    assert 'id="cancel-group"' not in r.text
    counts = client.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json["status"]["task_run_status_counts"]
    assert counts.get("cancelled") == 3 and not counts.get("queued")
    # The groups list breaks it down by status
    listed = client.get("/dashboard/groups").text
    assert re.search(r'class="status s-cancelled">cancelled 3<', listed)


def test_the_groups_list_shows_each_status_count(client, drain):
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    inputs = [{"input": {}, "processor": "echo"}] * 2 + [{"input": {"message": "no"}, "processor": "broken"}]
    client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=HEADERS)
    drain()
    signed_in(client)
    row = client.get("/dashboard/groups").text
    assert ">completed 2<" in row and ">failed 1<" in row and ">queued" not in row


def test_the_runs_list_shows_the_error_and_how_long_each_run_took_on_one_line(client, drain):
    failed = submit(client, "broken", {"message": "the disk is full"})
    done = submit(client, "echo", {"n": 1})
    drain()
    signed_in(client)
    page = client.get("/dashboard/runs").text
    rows = {rid: re.search(rf"{rid}.*?</tr>", page, re.S).group(0) for rid in (failed, done)}  # type: ignore[union-attr]
    assert "the disk is full" in rows[failed] and 'class="error"' in rows[failed]
    assert 'class="error"' not in rows[done]
    for row in rows.values():
        took = re.search(r'class="num took">([^<]+)<', row)
        assert took and re.fullmatch(r"\d+ ms|\d+\.\d s", took.group(1)), row
        # Times are short, with the full time a hover away
        created = re.search(r'<time datetime="([^"]+)" title="\1">(\d\d:\d\d:\d\d|\w{3} \d\d \d\d:\d\d)</time>', row)
        assert created, row


def test_times_and_durations_are_written_short():
    day = 1_790_000_000_000  # 2026-09-21
    assert compact(day + 1000, today_ms=day) == "14:13:21"
    assert compact(day, today_ms=day + 3 * 86_400_000) == "Sep 21 14:13"
    assert compact(day, today_ms=day + 400 * 86_400_000) == "2026-09-21"
    assert [duration(s) for s in (0.0123, 12.34, 185, 7830)] == ["12 ms", "12.3 s", "3 min 5 s", "2 h 10 min"]


def test_the_run_page_says_where_and_how_long_the_run_ran(client, drain, broker):
    run_id = submit(client, "echo", {"n": 1})
    drain()
    signed_in(client)
    page = client.get(f"/dashboard/runs/{run_id}").text
    worker = broker.redis.hget(keys.run(run_id), "worker")
    assert worker and worker in page
    assert re.search(r'id="run-queue">default<', page)
    assert re.search(r'id="run-duration">\d+ ms', page)
    assert "no longer registered" in page  # drain() does not register: its host is not known
    # While the worker is registered, its host is shown
    Registration(broker, worker, ["default"], ["echo"], 1, "threads", {}).birth()
    page = client.get(f"/dashboard/runs/{run_id}").text
    assert f'id="run-host">{socket.gethostname()}<' in page


def test_the_workers_table_says_which_processors_each_worker_serves(client, broker):
    Registration(broker, "ops-worker", ["default", "mail"], ["echo", "notify"], 4, "threads", {}).birth()
    signed_in(client)
    page = client.get("/dashboard").text
    row = re.search(r'<tr><td class="id">ops-worker</td>.*?</tr>', page, re.S)
    assert row and '<td class="serves">echo, notify</td>' in row.group(0) and "<td>default, mail</td>" in row.group(0)
    # A long list is cut short, the rest a click away
    many = [f"p{i}" for i in range(12)]
    Registration(broker, "big-worker", ["default"], many, 4, "threads", {}).birth()
    row = re.search(r'<tr><td class="id">big-worker</td>.*?</tr>', client.get("/dashboard").text, re.S)
    assert row and "and 4 more" in row.group(0) and "p11" in row.group(0)


def snapshot(broker, minute: int | None = None) -> None:  # type: ignore[no-untyped-def]
    """The maintenance step's metrics snapshot, for `minute` (a past one) or now."""
    Maintenance(broker).tend(0, minute)


def test_the_last_hours_chart_counts_runs_ended_and_failed_and_queue_waits(client, drain, broker):
    # Workers here take no snapshot of their own: the test takes each one, through the
    # maintenance step, for minutes it names.
    quiet = broker.settings.replace(reaper_interval_s=3600)
    now = broker.now_ms() // history.MINUTE_MS
    # Given two runs that ended between the snapshots of minutes now-5 and now-4, one failed
    snapshot(broker, now - 5)
    submit(client, "echo", {"n": 1})
    submit(client, "broken", {"message": "no"})
    drain(quiet)
    snapshot(broker, now - 4)
    # and one that ended while no snapshot was taken (none for now-3 and now-2)
    submit(client, "echo", {"n": 2})
    drain(quiet)
    snapshot(broker, now - 1)
    # and one cancelled after this minute's snapshot
    snapshot(broker)
    this = broker.now_ms() // history.MINUTE_MS  # (the snapshot's minute, unless one just began)
    run_id = submit(client, "echo", {"n": 3})
    client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    # Then each minute counts the change to the next snapshot, a gap's change on its
    # later minute, the current minute what changed since its snapshot
    minutes = history.last_hour(broker)
    assert len(minutes) == history.HOUR_MINUTES
    at = {m.start_ms // history.MINUTE_MS: m for m in minutes}
    assert at[now - 5].ended == {"completed": 1, "failed": 1} and sum(at[now - 5].waits.values()) == 2
    assert at[now - 5].wait_s(0.5) is not None and at[now - 5].wait_s(0.99) is not None
    assert at[now - 4].ended == at[now - 3].ended == {} and at[now - 2].ended == {"completed": 1}
    assert at[now - 1].ended == {}
    assert at[this].ended == {"cancelled": 1} and at[this].waits == {}
    assert sum(m.finished for m in minutes) == 4 and sum(sum(m.waits.values()) for m in minutes) == 3
    # And each snapshot expires
    kept = broker.redis.keys("*metrics:snapshot:*")
    assert len(kept) == 4 and all(0 < broker.redis.ttl(key) <= keys.SNAPSHOT_KEPT_S for key in kept)
    # And the front page draws them: bars, the wait lines, a title for each minute
    signed_in(client)
    page = client.get("/dashboard").text
    assert '<svg class="chart"' in page and page.count('class="minute"') == history.HOUR_MINUTES
    titles = re.findall(r"<title>\d\d:\d\d UTC: (\d+) ended, (\d+) failed", page)
    assert sum(int(e) for e, _ in titles) == 4 and sum(int(f) for _, f in titles) == 1
    assert "#ef4444" in page  # a failed bar
    assert "<polyline" in page or "<circle" in page  # the wait's points


def test_a_minute_is_snapshotted_once_and_runs_write_nothing_for_the_chart(client, drain, broker):
    # Given this minute's snapshot, taken before any run
    snapshot(broker)
    (key,) = broker.redis.keys("*metrics:snapshot:*")
    taken = broker.redis.hgetall(key)
    assert list(taken) == ["at"]
    # When a run ends, no snapshot is written (no maintenance step ran)
    submit(client, "echo", {"n": 1})
    drain(broker.settings.replace(reaper_interval_s=3600))
    assert broker.redis.keys("*metrics:snapshot:*") == [key] and broker.redis.hgetall(key) == taken
    # and when the maintenance step comes again, the minute's snapshot stays as taken
    # (had the minute turned meanwhile, the new one's would be another key)
    snapshot(broker)
    assert broker.redis.hgetall(key) == taken
    # Then the chart has the run, from the live totals
    assert sum(m.finished for m in history.last_hour(broker)) == 1


def test_until_the_current_minute_is_snapshotted_its_runs_show_in_the_minute_before(client, broker):
    # Given a snapshot of the minute before, and none yet of this one
    now = broker.now_ms() // history.MINUTE_MS
    snapshot(broker, now - 1)
    run_id = submit(client, "echo", {})
    client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    # Then the run shows in the minute before (the live totals stand in for the
    # snapshot to come; were this minute over by now, the run's minute would be the
    # one before the current one all the same); this minute shows nothing yet
    minutes = history.last_hour(broker)
    assert minutes[-2].ended == {"cancelled": 1} and minutes[-1].ended == {}


def test_a_quiet_hour_draws_an_empty_chart(client):
    signed_in(client)
    page = client.get("/dashboard").text
    assert '<svg class="chart"' in page and "no run started in this hour" in page
