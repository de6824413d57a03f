"""Runs that wait for a person (action_required): real worker and dispatcher
processes, a real webhook receiver; and the status sets defined once."""

from __future__ import annotations

import json
import re

import pytest

from taskq import events, keys, scripts
from taskq.client import RunHandle, default_tenant
from taskq.errors import Conflict, ValidationFailed
from taskq.models import ACTIVE, NOTIFY, TERMINAL, RunStatus
from tests.conftest import HEADERS, OTHER_KEY, wait_until
from tests.test_schemas import doubling
from tests.test_webhooks import tenant_secret, verify

APPROVAL = {"type": "object", "properties": {"approved": {"type": "boolean"}}, "required": ["approved"]}


def submit(client, processor, input, **extra):  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor, **extra}, headers=HEADERS)
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def get(client, run_id):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json


def waiting(client, run_id, asked=1):  # type: ignore[no-untyped-def]
    """Waits until the run is in action_required on its `asked`-th question."""

    def check():  # type: ignore[no-untyped-def]
        run = get(client, run_id)
        return run if run["status"] == "action_required" and run["attempts"] == asked else None

    return wait_until(check, timeout_s=20)


def answer(client, run_id, value, key=None):  # type: ignore[no-untyped-def]
    headers = {"x-api-key": key} if key else HEADERS
    return client.post(f"/v1/tasks/runs/{run_id}/action", json={"input": value}, headers=headers)


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_ask_frees_the_worker_and_the_answers_come_back_in_order(broker, client, worker, pool):
    # Given one worker serving one run at a time, and a run that asks twice
    worker(pool)
    run_id = submit(client, "spend", {"amount": 12})

    # When the run asks, it waits holding no worker and no lease
    run = waiting(client, run_id)
    assert run["is_active"] is True and run["error"] is None
    assert run["required_action"]["message"] == "approve spending 12?"
    assert run["required_action"]["schema"] == APPROVAL
    assert run["required_action"]["asked_at"] <= run["required_action"]["expires_at"]
    assert broker.redis.zscore(keys.running(0), run_id) is None
    assert broker.redis.zscore(keys.waiting(0), run_id) is not None
    other = submit(client, "echo", {"meanwhile": True})
    got = client.get(f"/v1/tasks/runs/{other}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 200 and got.json["output"]["content"] == {"meanwhile": True}

    # An answer that does not fit the schema is refused, naming the field, changing nothing
    bad = answer(client, run_id, {"approved": "yes"})
    assert bad.status_code == 422 and bad.json["error"]["detail"]["field"] == "input.approved"
    assert answer(client, run_id, {"approved": True}, key=OTHER_KEY).status_code == 404
    assert get(client, run_id)["status"] == "action_required"

    # Then each answer runs the processor again from the start, ask() returning it
    ok = answer(client, run_id, {"approved": True})
    assert ok.status_code == 200 and ok.json["status"] in {"queued", "running", "action_required"}
    assert ok.json.get("required_action") is None or ok.json["status"] == "action_required"
    run = waiting(client, run_id, asked=2)
    assert run["required_action"]["message"] == "a note for the ledger?"
    assert answer(client, run_id, "for the tests").status_code == 200

    got = client.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 200, got.json
    assert got.json["output"]["content"] == {"approved": True, "note": "for the tests"}
    # `spend` has retries=0: asking twice spent none of them
    assert got.json["run"]["attempts"] == 3 and got.json["run"]["errors"] == []
    assert got.json["run"]["required_action"] is None
    states = [f["status"] for _i, f in events.run_entries(broker, run_id) if f["type"] == "task_run.state"]
    assert states == [
        "queued",
        "running",
        "action_required",
        "queued",
        "running",
        "action_required",
        "queued",
        "running",
        "completed",
    ]
    assert broker.redis.zscore(keys.waiting(0), run_id) is None


def test_answering_a_run_that_is_not_waiting_is_409_and_a_bad_body_changes_nothing(client, worker):
    worker("threads")
    done = submit(client, "echo", {"x": 1})
    assert client.get(f"/v1/tasks/runs/{done}/result?timeout=20", headers=HEADERS).status_code == 200
    r = answer(client, done, {"approved": True})
    assert r.status_code == 409 and r.json["error"]["detail"]["status"] == "completed"

    run_id = submit(client, "spend", {})
    waiting(client, run_id)
    r = client.post(f"/v1/tasks/runs/{run_id}/action", data="{not json", headers=HEADERS)
    assert r.status_code == 400
    r = client.post(f"/v1/tasks/runs/{run_id}/action", json={"answer": 1}, headers=HEADERS)
    assert r.status_code == 422 and "input" in r.json["error"]["message"]
    assert get(client, run_id)["status"] == "action_required"


def test_a_waiting_run_can_be_cancelled(broker, client, worker):
    worker("threads")
    run_id = submit(client, "spend", {})
    waiting(client, run_id)
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 200 and r.json["status"] == "cancelled" and r.json["is_active"] is False
    assert r.json["required_action"] is None
    assert broker.redis.zscore(keys.waiting(0), run_id) is None
    assert answer(client, run_id, {"approved": True}).status_code == 409


def test_a_run_left_unanswered_fails_saying_no_answer_came(broker, client, worker):
    worker("threads", settings=broker.settings.replace(action_timeout_s=1))
    run_id = submit(client, "spend", {})
    # Not waiting to see action_required: on a loaded machine the second may pass first.
    run = wait_until(lambda: (r := get(client, run_id))["status"] == "failed" and r, timeout_s=20)
    assert run["error"]["message"] == "no answer came within 1 s"
    assert run["error"]["detail"]["question"] == "approve spending 0?"
    assert broker.redis.ttl(keys.run(run_id)) > 0  # a failed run expires like any other


def test_group_counts_and_streams_know_a_waiting_run(client, worker):
    worker("threads")
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    added = client.post(
        f"/v1/tasks/groups/{gid}/runs", json={"inputs": [{"input": {}, "processor": "spend"}]}, headers=HEADERS
    )
    (run_id,) = added.json["run_ids"]
    waiting(client, run_id)

    status = client.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json["status"]
    assert status["task_run_status_counts"] == {"action_required": 1} and status["is_active"] is True
    stream = client.get(f"/v1/tasks/groups/{gid}/events?timeout=1", headers=HEADERS).get_data(as_text=True)
    assert '"status": "action_required"' in stream or '"status":"action_required"' in stream

    client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    status = client.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json["status"]
    assert status["task_run_status_counts"] == {"cancelled": 1} and status["is_active"] is False


def test_a_webhook_goes_out_when_a_run_waits_for_an_answer(client, spawn, worker, receiver, broker):
    r = client.post(
        "/v1/tasks/runs",
        json={"input": {"amount": 5}, "processor": "spend", "webhook": {"url": receiver.url("/hook")}},
        headers=HEADERS,
    )
    run_id = r.json["run_id"]
    worker("threads")
    spawn("dispatcher", settings=broker.settings)
    wait_until(lambda: receiver.at("/hook"), timeout_s=20)
    event = verify(tenant_secret(client), receiver.at("/hook")[0])
    assert event["data"]["run_id"] == run_id and event["data"]["status"] == "action_required"
    assert event["data"]["required_action"]["message"] == "approve spending 5?"
    assert event["data"]["required_action"]["schema"] == APPROVAL


def test_the_python_handle_answers(broker, worker):
    from workers.app import spend

    worker("threads")
    handle = spend.put({"amount": 1}, broker=broker)
    wait_until(lambda: handle.status().status is RunStatus.action_required, timeout_s=20)
    try:
        handle.answer({"approved": 1})
        raise AssertionError("an answer that does not fit should be refused")
    except ValidationFailed as exc:
        assert "input.approved" in exc.message
    handle.answer({"approved": False})
    assert handle.result(timeout_s=20) == {"approved": False}
    try:
        RunHandle(broker, default_tenant(broker), handle.run_id).answer({"approved": True})
        raise AssertionError("a finished run cannot be answered")
    except Conflict:
        pass


def test_ask_with_a_schema_that_is_not_json_schema_fails_the_run(client, worker):
    worker("threads")
    run_id = submit(client, "ask_badly", {})
    got = client.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 409
    assert "ask(schema) is not a valid JSON Schema" in got.json["error"]["message"]


@pytest.mark.parametrize(
    "schema, why",
    [
        (doubling(30), "ask(schema): schema expands past 100,000 keywords"),
        ({"type": 1}, "ask(schema) is not a valid JSON Schema"),
    ],
    ids=["exploding", "invalid"],
)
def test_ask_with_a_schema_taskq_refuses_fails_the_run_at_once(client, drain, schema, why):
    # ask_badly has retries=3: a refused schema is refused again, so none is spent
    run_id = submit(client, "ask_badly", {"schema": schema})
    drain()
    run = get(client, run_id)
    assert run["status"] == "failed" and run["attempts"] == 1 and run["required_action"] is None, run
    assert why in run["error"]["message"], run


def test_an_answer_checked_against_an_exploding_schema_is_422_and_changes_nothing(broker, client, drain):
    # Given a run waiting on a question whose schema the worker would have refused
    run_id = submit(client, "spend", {})
    drain()
    question = json.loads(broker.redis.hget(keys.run(run_id), "required_action"))
    broker.redis.hset(keys.run(run_id), "required_action", json.dumps({**question, "schema": doubling(30)}))
    before = broker.redis.hgetall(keys.run(run_id))
    # When it is answered, then the answer is refused and the run still waits
    r = answer(client, run_id, {"approved": True})
    assert r.status_code == 422 and r.json["error"]["detail"]["field"] == "input", r.json
    assert "expands past 100,000 keywords" in r.json["error"]["message"]
    assert broker.redis.hgetall(keys.run(run_id)) == before
    assert broker.redis.zscore(keys.waiting(0), run_id) is not None


def test_each_status_set_is_defined_once_and_the_lua_steps_receive_it():
    prelude = scripts.prelude()
    for name, statuses in (("TERMINAL", TERMINAL), ("ACTIVE", ACTIVE), ("NOTIFY", NOTIFY)):
        line = next(line for line in prelude.splitlines() if line.startswith(f"local {name} = "))
        assert set(re.findall(r"\['(\w+)'\]", line)) == {s.value for s in statuses}
    assert RunStatus.action_required in ACTIVE and RunStatus.action_required in NOTIFY
    lua = "".join(
        p.read_text() for p in (scripts.resources.files("taskq") / "scripts").iterdir() if p.name.endswith(".lua")
    )
    # No Lua script spells a status set of its own
    assert "completed = true" not in lua and "c:queued" not in lua


def test_an_async_processor_asks_and_saves_files_like_any_other(client, worker, tmp_path):
    worker("threads", settings=client.application.extensions["taskq"].settings.replace(output_dir=str(tmp_path)))
    run_id = submit(client, "aspend", {})
    waiting(client, run_id)
    assert answer(client, run_id, True).status_code == 200
    got = client.get(f"/v1/tasks/runs/{run_id}/result?timeout=20", headers=HEADERS)
    assert got.status_code == 200 and got.json["output"]["content"] == {"approved": True}
    assert [o["name"] for o in got.json["run"]["outputs"]] == ["receipt.txt"]
