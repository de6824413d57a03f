"""Task groups over HTTP: create, add runs (all or nothing), exact counts, cancel,
and the three SSE streams (a group's runs, a group's events, a run's events)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from taskq import keys
from tests.conftest import HEADERS, OTHER_KEY, wait_until

GROUPS = "/v1/tasks/groups"


def new_group(client, metadata=None) -> str:  # type: ignore[no-untyped-def]
    r = client.post(GROUPS, json={"metadata": metadata} if metadata else {}, headers=HEADERS)
    assert r.status_code == 200, r.json
    return r.json["taskgroup_id"]  # type: ignore[no-any-return]


def add(client, gid: str, inputs: list[dict[str, Any]], **body: Any):  # type: ignore[no-untyped-def]
    return client.post(f"{GROUPS}/{gid}/runs", json={"inputs": inputs, **body}, headers=HEADERS)


def echo_inputs(n: int, processor: str = "echo") -> list[dict[str, Any]]:
    return [{"input": {"i": i}, "processor": processor} for i in range(n)]


def status(client, gid: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = client.get(f"{GROUPS}/{gid}", headers=HEADERS)
    assert r.status_code == 200, r.json
    return r.json["status"]  # type: ignore[no-any-return]


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON payload of every event in an SSE body, in order (comments skipped)."""
    out = []
    for block in text.split("\n\n"):
        data = [line[len("data: ") :] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            out.append(json.loads("\n".join(data)))
    return out


def run_keys(broker) -> list[str]:  # type: ignore[no-untyped-def]
    return list(broker.redis.scan_iter(match=keys.prefix(0) + "run:*"))


# -- groups


@pytest.mark.parametrize("prefix", ["/v1/tasks/groups", "/v1beta/tasks/groups"])
def test_group_is_created_and_read_in_the_parallel_wire_format(client, prefix):
    r = client.post(prefix, json={"metadata": {"batch": "nightly", "n": 3}}, headers=HEADERS)
    assert r.status_code == 200
    group = r.json
    assert group["taskgroup_id"].startswith("tgrp_")
    assert group["metadata"] == {"batch": "nightly", "n": 3}
    assert group["created_at"].endswith("Z")
    assert group["status"]["num_task_runs"] == 0
    assert group["status"]["task_run_status_counts"] == {}
    assert group["status"]["is_active"] is False
    got = client.get(f"{prefix}/{group['taskgroup_id']}", headers=HEADERS)
    assert got.status_code == 200 and got.json == group


def test_group_metadata_over_the_limits_is_422_and_makes_no_group(client, broker):
    before = set(broker.redis.keys("*"))
    r = client.post(GROUPS, json={"metadata": {"note": "x" * 513}}, headers=HEADERS)
    assert r.status_code == 422 and r.json["error"]["message"].startswith("metadata.note")
    assert set(broker.redis.keys("*")) == before


def test_another_tenants_group_is_404_everywhere(client):
    gid = new_group(client)
    other = {"x-api-key": OTHER_KEY}
    assert client.get(f"{GROUPS}/{gid}", headers=other).status_code == 404
    assert client.post(f"{GROUPS}/{gid}/runs", json={"inputs": echo_inputs(1)}, headers=other).status_code == 404
    assert client.get(f"{GROUPS}/{gid}/runs", headers=other).status_code == 404
    assert client.get(f"{GROUPS}/{gid}/events", headers=other).status_code == 404
    assert client.post(f"{GROUPS}/{gid}/cancel", headers=other).status_code == 404
    assert client.get(f"{GROUPS}/tgrp_nope", headers=HEADERS).status_code == 404
    assert status(client, gid)["num_task_runs"] == 0


def test_added_runs_are_queued_in_order_with_cursors_for_the_streams(client, broker):
    gid = new_group(client)
    first = add(
        client,
        gid,
        echo_inputs(3),
        default_task_spec={"output_schema": {"type": "json", "json_schema": {"type": "object"}}},
    )
    assert first.status_code == 200, first.json
    assert first.json["status"]["num_task_runs"] == 3
    assert first.json["status"]["task_run_status_counts"] == {"queued": 3}
    assert first.json["status"]["is_active"] is True
    assert first.json["run_cursor"] is None and first.json["event_cursor"] is None
    second = add(client, gid, echo_inputs(2))
    assert second.json["run_cursor"] == "2"
    ids = first.json["run_ids"] + second.json["run_ids"]
    assert broker.redis.lrange(keys.group_runs(gid), 0, -1) == ids
    queued = broker.redis.lrange("rq:queue:default", 0, -1)
    assert [job_id.split("-")[0] for job_id in queued] == ids  # an RQ job id starts with its run id
    run = client.get(f"{GROUPS}/{gid}/runs/{ids[0]}", headers=HEADERS).json
    assert run["taskgroup_id"] == gid and run["status"] == "queued"
    # The default task_spec applies to the inputs that have none.
    assert "output_schema" in broker.redis.hgetall(keys.run(ids[0]))
    assert "output_schema" not in broker.redis.hgetall(keys.run(ids[3]))
    # Only the group's own runs are found under it.
    lone = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS).json["run_id"]
    assert client.get(f"{GROUPS}/{gid}/runs/{lone}", headers=HEADERS).status_code == 404
    # The runs stream resumed from the second add's cursor lists exactly its runs.
    body = client.get(f"{GROUPS}/{gid}/runs?last_event_id={second.json['run_cursor']}", headers=HEADERS).data.decode()
    assert [e["run"]["run_id"] for e in sse_events(body)] == second.json["run_ids"]


def test_an_add_of_1001_inputs_is_rejected_whole(client, broker):
    gid = new_group(client)
    r = add(client, gid, echo_inputs(1001))
    assert r.status_code == 422
    assert r.json["error"]["message"].startswith("inputs:")
    assert "1000" in r.json["error"]["message"]
    assert status(client, gid)["num_task_runs"] == 0
    assert broker.redis.llen(keys.group_runs(gid)) == 0
    assert run_keys(broker) == [] and broker.redis.llen("rq:queue:default") == 0
    assert add(client, gid, echo_inputs(1000)).status_code == 200


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"input": {"i": 2}, "processor": "no_such_processor"}, "inputs.2.processor"),
        ({"input": {"name": 7}, "processor": "research"}, "inputs.2.input"),
        ({"input": {"i": 2}}, "inputs.2.processor"),
        ({"input": {"i": 2}, "processor": "echo", "metadata": {"k" * 65: "v"}}, "inputs.2.metadata"),
    ],
)
def test_an_add_with_one_invalid_input_is_rejected_whole(client, broker, bad, field):
    gid = new_group(client)
    inputs = echo_inputs(5)
    inputs[2] = bad
    r = add(client, gid, inputs)
    assert r.status_code == 422, r.json
    assert r.json["error"]["message"].startswith(field), r.json
    assert status(client, gid)["num_task_runs"] == 0
    assert broker.redis.llen(keys.group_runs(gid)) == 0
    assert run_keys(broker) == [] and broker.redis.llen("rq:queue:default") == 0


def test_counts_are_exact_when_runs_end_and_the_group_goes_inactive(client, worker):
    gid = new_group(client)
    add(client, gid, echo_inputs(6))
    add(client, gid, [{"input": {"message": "no"}, "processor": "broken"}] * 2)
    worker("threads")
    wait_until(lambda: not status(client, gid)["is_active"], timeout_s=30)
    final = status(client, gid)
    assert final["num_task_runs"] == 8
    assert final["task_run_status_counts"] == {"completed": 6, "failed": 2}
    assert final["status_message"]


def test_runs_can_be_added_while_earlier_ones_run(client, worker):
    gid = new_group(client)
    add(client, gid, [{"input": {"seconds": 2}, "processor": "sleep"} for _ in range(2)])
    worker("threads")
    wait_until(lambda: status(client, gid)["task_run_status_counts"].get("running") == 2, timeout_s=30)
    added = add(client, gid, echo_inputs(3))  # while the first two run
    assert added.status_code == 200 and added.json["status"]["is_active"] is True
    assert added.json["status"]["num_task_runs"] == 5
    wait_until(lambda: status(client, gid)["task_run_status_counts"] == {"completed": 5}, timeout_s=30)
    assert status(client, gid)["is_active"] is False


def test_cancelling_a_group_cancels_its_queued_and_running_runs(client, worker):
    gid = new_group(client)
    ids = add(client, gid, [{"input": {"seconds": 60}, "processor": "sleep"}] * 3).json["run_ids"]
    worker("threads", concurrency=1)
    wait_until(lambda: status(client, gid)["task_run_status_counts"].get("running") == 1, timeout_s=30)
    r = client.post(f"{GROUPS}/{gid}/cancel", headers=HEADERS)
    assert r.status_code == 200
    assert r.json["status"]["task_run_status_counts"] in ({"cancelled": 2, "cancelling": 1}, {"cancelled": 3})
    wait_until(lambda: status(client, gid)["task_run_status_counts"] == {"cancelled": 3}, timeout_s=30)
    assert status(client, gid)["is_active"] is False
    assert {client.get(f"/v1/tasks/runs/{i}", headers=HEADERS).json["status"] for i in ids} == {"cancelled"}


def test_a_group_of_5000_noop_runs_finishes_with_exact_counts(client, broker, worker):
    gid = new_group(client)
    for _ in range(5):
        assert add(client, gid, echo_inputs(1000, "noop")).status_code == 200
    worker("threads")
    worker("threads")
    wait_until(lambda: not status(client, gid)["is_active"], timeout_s=100, interval_s=0.2)
    final = status(client, gid)
    assert final["num_task_runs"] == 5000
    assert final["task_run_status_counts"] == {"completed": 5000}
    ended = [f for _id, f in broker.redis.xrange(keys.group_events(gid)) if f["type"] == "task_run.state"]
    assert len(ended) == 5000 and len({f["run_id"] for f in ended}) == 5000


# -- streams


def test_runs_stream_has_one_event_per_run_in_order_with_input_output_and_status_filter(client, worker):
    gid = new_group(client)
    ids = add(client, gid, echo_inputs(4)).json["run_ids"]
    ids += add(client, gid, [{"input": {}, "processor": "broken"}]).json["run_ids"]
    worker("threads")
    wait_until(lambda: not status(client, gid)["is_active"], timeout_s=30)

    plain = sse_events(client.get(f"{GROUPS}/{gid}/runs", headers=HEADERS).data.decode())
    assert [e["run"]["run_id"] for e in plain] == ids
    assert {e["type"] for e in plain} == {"task_run.state"}
    assert all("input" not in e and "output" not in e for e in plain)

    full = sse_events(
        client.get(f"{GROUPS}/{gid}/runs?include_input=true&include_output=true", headers=HEADERS).data.decode()
    )
    assert [e["input"]["input"] for e in full[:4]] == [{"i": i} for i in range(4)]
    assert [e["output"] for e in full[:4]] == [{"type": "json", "content": {"i": i}, "basis": []} for i in range(4)]
    assert "output" not in full[4] and full[4]["run"]["status"] == "failed"

    failed = sse_events(client.get(f"{GROUPS}/{gid}/runs?status=failed", headers=HEADERS).data.decode())
    assert [e["run"]["run_id"] for e in failed] == ids[4:]
    resumed = sse_events(client.get(f"{GROUPS}/{gid}/runs?last_event_id=1", headers=HEADERS).data.decode())
    assert [e["run"]["run_id"] for e in resumed] == ids[2:]
    assert client.get(f"{GROUPS}/{gid}/runs?status=bogus", headers=HEADERS).status_code == 422


def test_group_events_stream_run_ends_then_group_status_and_closes(client, worker):
    gid = new_group(client)
    ids = add(client, gid, echo_inputs(3)).json["run_ids"]
    worker("threads")
    wait_until(lambda: not status(client, gid)["is_active"], timeout_s=30)
    events = sse_events(client.get(f"{GROUPS}/{gid}/events", headers=HEADERS).data.decode())
    assert [e["type"] for e in events] == ["task_run.state"] * 3 + ["task_group_status"]
    assert sorted(e["run"]["run_id"] for e in events[:3]) == sorted(ids)
    assert all(e["run"]["status"] == "completed" for e in events[:3])
    assert events[-1]["status"]["task_run_status_counts"] == {"completed": 3}
    assert events[-1]["status"]["is_active"] is False
    assert len({e["event_id"] for e in events}) == 4


def test_group_events_stream_is_bounded_by_timeout_and_sends_heartbeats(client):
    gid = new_group(client)
    add(client, gid, echo_inputs(1))  # no worker: the group stays active
    r = client.get(f"{GROUPS}/{gid}/events?timeout=2.5", headers=HEADERS)
    body = r.data.decode()
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    assert ": ping" in body and sse_events(body) == []
    assert client.get(f"{GROUPS}/{gid}/events?last_event_id=zzz", headers=HEADERS).status_code == 422


def test_group_events_cut_midway_and_resumed_yield_every_event_exactly_once(broker, gunicorn, worker):
    url = gunicorn()
    api = f"{url}{GROUPS}"
    gid = requests.post(api, json={}, headers=HEADERS, timeout=10).json()["taskgroup_id"]
    ids = requests.post(
        f"{api}/{gid}/runs", json={"inputs": echo_inputs(40, "noop")}, headers=HEADERS, timeout=10
    ).json()["run_ids"]

    # Given a stream that is open before any run ends, cut after ten events
    seen: list[dict[str, Any]] = []
    with requests.get(f"{api}/{gid}/events", headers=HEADERS, stream=True, timeout=30) as first:
        worker("threads")
        for event in iter_sse(first):
            seen.append(event)
            if len(seen) == 10:
                break
    # When it is resumed from the last event seen
    with requests.get(
        f"{api}/{gid}/events", params={"last_event_id": seen[-1]["event_id"]}, headers=HEADERS, stream=True, timeout=60
    ) as second:
        seen += list(iter_sse(second))

    # Then every event of the group's stream arrived once, in order, and it ended with the group
    stored = [entry_id for entry_id, _ in broker.redis.xrange(keys.group_events(gid))]
    assert [e["event_id"] for e in seen] == stored
    ended = [e["run"]["run_id"] for e in seen if e["type"] == "task_run.state"]
    assert sorted(ended) == sorted(ids)
    assert seen[-1]["type"] == "task_group_status" and seen[-1]["status"]["is_active"] is False


def iter_sse(response: requests.Response):  # type: ignore[no-untyped-def]
    data: list[str] = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


def test_a_client_that_disconnects_frees_its_stream(broker, gunicorn):
    url = gunicorn()
    gid = requests.post(f"{url}{GROUPS}", json={}, headers=HEADERS, timeout=10).json()["taskgroup_id"]
    requests.post(f"{url}{GROUPS}/{gid}/runs", json={"inputs": echo_inputs(1)}, headers=HEADERS, timeout=10)

    def stream_connections() -> list[dict[str, Any]]:
        return [c for c in broker.redis.client_list() if c.get("cmd") == "xread"]

    with requests.get(f"{url}{GROUPS}/{gid}/events", headers=HEADERS, stream=True, timeout=30) as r:
        assert next(r.iter_lines(decode_unicode=True)) == ": ping"
        wait_until(lambda: any("b" in c["flags"] for c in stream_connections()))
    # A live stream blocks in XREAD again at every heartbeat (1 s here), so its
    # connection is never idle for 2 s; a freed one is back in the pool, idle.
    wait_until(lambda: all("b" not in c["flags"] and int(c["idle"]) >= 2 for c in stream_connections()), timeout_s=20)


def test_run_events_stream_progress_messages_and_state_changes(client, worker):
    run_id = client.post(
        "/v1/tasks/runs", json={"input": {"name": "Acme"}, "processor": "research"}, headers=HEADERS
    ).json["run_id"]
    worker("threads")
    events = sse_events(client.get(f"/v1/tasks/runs/{run_id}/events", headers=HEADERS).data.decode())
    states = [e["run"]["status"] for e in events if e["type"] == "task_run.state"]
    assert states == ["queued", "running", "completed"]
    progress = [e for e in events if e["type"].startswith("task_run.progress_msg")]
    assert [e["message"] for e in progress] == ["looking up Acme"]
    assert progress[0]["timestamp"].endswith("Z")
    assert all(e["run"]["run_id"] == run_id for e in events if e["type"] == "task_run.state")
    # Resuming after the first event leaves it out.
    first_id = events[0]["event_id"]
    again = sse_events(
        client.get(f"/v1/tasks/runs/{run_id}/events?last_event_id={first_id}", headers=HEADERS).data.decode()
    )

    def ids(evs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(e["type"], e.get("event_id") or e["message"]) for e in evs]

    assert ids(again) == ids(events[1:])
    assert client.get(f"/v1/tasks/runs/{run_id}/events", headers={"x-api-key": OTHER_KEY}).status_code == 404


def test_a_finished_group_expires_after_the_retention_period(client, broker, worker):
    gid = new_group(client)
    group_keys = [keys.group(gid), keys.group_runs(gid), keys.group_events(gid)]
    assert 0 < broker.redis.ttl(keys.group(gid)) <= broker.settings.retention_s
    add(client, gid, echo_inputs(2))
    assert [broker.redis.ttl(k) for k in group_keys[:2]] == [-1, -1]
    running = worker("threads")
    wait_until(lambda: not status(client, gid)["is_active"], timeout_s=30)
    assert all(0 < broker.redis.ttl(k) <= broker.settings.retention_s for k in group_keys)
    running.stop()  # so the next run stays queued and the group active
    add(client, gid, echo_inputs(1))
    assert [broker.redis.ttl(k) for k in group_keys] == [-1, -1, -1]


def test_streams_of_a_finished_group_or_run_close_without_waiting_for_a_heartbeat(broker, worker):
    from taskq.gateway import create_app

    client = create_app(broker.settings.replace(sse_heartbeat_s=600)).test_client()
    gid = new_group(client)
    run_id = add(client, gid, echo_inputs(1)).json["run_ids"][0]
    worker("threads")
    wait_until(lambda: not status(client, gid)["is_active"], timeout_s=30)
    # With a 600 s heartbeat, a stream that waited for one would hit the test timeout.
    events = sse_events(client.get(f"{GROUPS}/{gid}/events", headers=HEADERS).data.decode())
    assert [e["type"] for e in events] == ["task_run.state", "task_group_status"]
    events = sse_events(client.get(f"/v1/tasks/runs/{run_id}/events", headers=HEADERS).data.decode())
    assert [e["run"]["status"] for e in events] == ["queued", "running", "completed"]


def test_a_replayed_group_status_event_shows_the_counts_it_had_then(client, drain):
    gid = new_group(client)
    add(client, gid, echo_inputs(2))
    drain()
    add(client, gid, echo_inputs(1, "broken"))  # the group is active again, then ends with 3 runs
    drain()
    events = sse_events(client.get(f"{GROUPS}/{gid}/events", headers=HEADERS).data.decode())
    statuses = [e["status"] for e in events if e["type"] == "task_group_status"]
    assert [s["task_run_status_counts"] for s in statuses] == [{"completed": 2}, {"completed": 2, "failed": 1}]
    assert [s["num_task_runs"] for s in statuses] == [2, 3] and not any(s["is_active"] for s in statuses)
    first_ended = [e["run"] for e in events if e["type"] == "task_run.state"][:2]
    assert all(r["status"] == "completed" and r["attempts"] == 1 for r in first_ended)
