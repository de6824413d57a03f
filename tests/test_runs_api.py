"""Runs over HTTP: the Parallel TaskRun wire format, errors, tenants, idempotency."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from taskq import keys
from tests.conftest import API_KEY, HEADERS, OTHER_KEY, wait_until


def create(client, body, headers=HEADERS, **kw):  # type: ignore[no-untyped-def]
    return client.post("/v1/tasks/runs", json=body, headers=headers, **kw)


def all_keys(broker) -> set[str]:  # type: ignore[no-untyped-def]
    return set(broker.redis.keys("*"))


def test_create_returns_202_with_a_queued_task_run(client, broker):
    r = create(client, {"input": {"name": "Acme"}, "processor": "research", "metadata": {"k": "v", "n": 2}})
    assert r.status_code == 202
    run = r.json
    assert run["run_id"].startswith("trun_")
    assert run["status"] == "queued" and run["is_active"] is True
    assert run["processor"] == "research"
    assert run["metadata"] == {"k": "v", "n": 2}
    assert run["created_at"].endswith("Z") and run["attempts"] == 0 and run["max_retries"] == 3
    stored = broker.redis.hgetall(keys.run(run["run_id"]))
    assert stored["status"] == "queued"
    # It waits in its lane (its processor's, its tenant's), mirrored in RQ's list for `rq info`.
    assert broker.redis.zrange(keys.lane(0, stored["lane"]), 0, -1) == [run["run_id"]]
    assert stored["lane"].startswith("research|") and broker.redis.hget(keys.depth(0), "default") == "1"
    assert broker.redis.lrange("rq:queue:default", 0, -1) == [run["run_id"]]


def test_get_run_and_its_input(client):
    run_id = create(client, {"input": "some text", "processor": "shout"}).json["run_id"]
    got = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS)
    assert got.status_code == 200 and got.json["run_id"] == run_id and got.json["status"] == "queued"
    got = client.get(f"/v1/tasks/runs/{run_id}/input", headers=HEADERS)
    assert got.json == {"input": "some text", "processor": "shout"}


def test_bearer_auth_is_accepted(client):
    r = create(client, {"input": {}, "processor": "echo"}, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 202


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "nope"}, {"Authorization": "Bearer nope"}])
def test_missing_or_unknown_key_is_401_and_writes_nothing(client, broker, headers):
    before = all_keys(broker)
    r = create(client, {"input": {}, "processor": "echo"}, headers=headers)
    assert r.status_code == 401
    assert r.json["type"] == "error" and r.json["error"]["message"]
    assert all_keys(broker) == before


def test_another_tenants_run_is_404(client):
    run_id = create(client, {"input": {}, "processor": "echo"}).json["run_id"]
    other = {"x-api-key": OTHER_KEY}
    for path in ("", "/input", "/result?timeout=0"):
        assert client.get(f"/v1/tasks/runs/{run_id}{path}", headers=other).status_code == 404
    assert client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=other).status_code == 404
    assert client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json["status"] == "queued"


def test_unknown_run_is_404(client):
    r = client.get("/v1/tasks/runs/trun_doesnotexist", headers=HEADERS)
    assert r.status_code == 404 and "not found" in r.json["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("{not json", 400, "JSON"),
        ("[1, 2]", 400, "JSON object"),
        (json.dumps({"processor": "echo"}), 422, "input"),
        (json.dumps({"input": {}}), 422, "processor"),
        (json.dumps({"input": 5, "processor": "echo"}), 422, "input"),
        (json.dumps({"input": {}, "processor": "nope"}), 422, "known processors: "),
        (json.dumps({"input": {}, "processor": "echo", "metadata": {"k": [1]}}), 422, "metadata"),
        (json.dumps({"input": {}, "processor": "echo", "metadata": {"k": "v" * 513}}), 422, "metadata.k"),
        (json.dumps({"input": {}, "processor": "echo", "metadata": {"k" * 65: "v"}}), 422, "metadata"),
        (json.dumps({"input": {"website": 1}, "processor": "research"}), 422, "input"),
        (json.dumps({"input": {}, "processor": "echo", "webhook": {"url": "ftp://x"}}), 422, "webhook.url"),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(client, broker, body, status, needle):
    before = all_keys(broker)
    r = client.post("/v1/tasks/runs", data=body, headers={**HEADERS, "content-type": "application/json"})
    assert r.status_code == status, r.json
    assert r.json["type"] == "error"
    assert needle in r.json["error"]["message"]
    assert all_keys(broker) == before


def test_input_schema_is_checked_at_the_gateway_naming_the_field(client, broker):
    before = all_keys(broker)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    body = {
        "input": {"age": "old"},
        "processor": "echo",
        "task_spec": {"input_schema": {"type": "json", "json_schema": schema}},
    }
    r = create(client, body)
    assert r.status_code == 422
    assert r.json["error"]["message"].startswith("input.age:")
    assert r.json["error"]["detail"]["field"] == "input.age"
    assert all_keys(broker) == before
    body["input"] = {"age": 3}
    assert create(client, body).status_code == 202


def test_an_invalid_json_schema_is_422(client):
    spec = {"output_schema": {"type": "json", "json_schema": {"type": "no-such-type"}}}
    r = create(client, {"input": {}, "processor": "echo", "task_spec": spec})
    assert r.status_code == 422 and "output_schema" in r.json["error"]["message"]


def test_oversized_body_is_413_and_writes_nothing(broker):
    from taskq.gateway import create_app

    app = create_app(broker.settings.replace(max_body_bytes=1000))
    before = all_keys(broker)
    r = app.test_client().post(
        "/v1/tasks/runs", json={"input": {"x": "y" * 2000}, "processor": "echo"}, headers=HEADERS
    )
    assert r.status_code == 413
    assert "too large" in r.json["error"]["message"]
    assert all_keys(broker) == before


def test_full_queue_is_429_with_retry_after(broker):
    from taskq.gateway import create_app

    client = create_app(broker.settings.replace(max_queue_length=2)).test_client()
    assert create(client, {"input": {}, "processor": "echo"}).status_code == 202
    assert create(client, {"input": {}, "processor": "echo"}).status_code == 202
    r = create(client, {"input": {}, "processor": "echo"})
    assert r.status_code == 429 and r.headers["Retry-After"]
    assert broker.redis.llen("rq:queue:default") == 2


def test_result_of_an_unfinished_run_is_408(client):
    run_id = create(client, {"input": {}, "processor": "echo"}).json["run_id"]
    r = client.get(f"/v1/tasks/runs/{run_id}/result?timeout=0.2", headers=HEADERS)
    assert r.status_code == 408
    assert "still queued" in r.json["error"]["message"]
    assert client.get(f"/v1/tasks/runs/{run_id}/result?timeout=abc", headers=HEADERS).status_code == 422


def test_same_idempotency_key_returns_the_first_run(client, broker):
    headers = {**HEADERS, "Idempotency-Key": "order-17"}
    first = create(client, {"input": {"n": 1}, "processor": "echo"}, headers=headers)
    again = create(client, {"input": {"n": 1}, "processor": "echo"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json["run_id"] == first.json["run_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert broker.redis.llen("rq:queue:default") == 1
    other_tenant = create(
        client,
        {"input": {"n": 1}, "processor": "echo"},
        headers={"x-api-key": OTHER_KEY, "Idempotency-Key": "order-17"},
    )
    assert other_tenant.json["run_id"] != first.json["run_id"]


def test_concurrent_posts_with_one_idempotency_key_make_one_run(broker):
    from taskq.gateway import create_app

    app = create_app(broker.settings)

    def post(_: int) -> str:
        with app.test_client() as c:
            return create(c, {"input": {}, "processor": "echo"}, headers={**HEADERS, "Idempotency-Key": "k"}).json[
                "run_id"
            ]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = set(pool.map(post, range(64)))
    assert len(ids) == 1
    assert broker.redis.llen("rq:queue:default") == 1


def test_expired_run_is_410_distinct_from_404(client, broker):
    from taskq.gateway import create_app

    short = create_app(broker.settings.replace(retention_s=1)).test_client()
    run_id = create(short, {"input": {}, "processor": "echo"}).json["run_id"]
    broker.redis.delete(keys.run(run_id))  # what expiry does, a retention later
    import time

    time.sleep(1.1)
    r = short.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS)
    assert r.status_code == 410 and "expired" in r.json["error"]["message"]
    never = "trun_" + run_id[5:17] + "0" * 20
    assert short.get(f"/v1/tasks/runs/{never[:-1]}", headers=HEADERS).status_code == 404


def test_health_ready_metrics_and_openapi_need_no_key(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}
    assert b"taskq_queue_depth" in client.get("/metrics").data
    doc = client.get("/openapi.json").json
    assert "/v1/tasks/runs" in doc["paths"] and "TaskRun" in doc["components"]["schemas"]


def test_redis_down_is_503_not_a_traceback(broker):
    from taskq.gateway import create_app
    from tests.conftest import free_port

    app = create_app(broker.settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    r = app.test_client().post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS)
    assert r.status_code == 503 and r.json["type"] == "error"
    assert app.test_client().get("/readyz").status_code == 503


def test_settings_survive_the_trip_through_the_environment(settings):
    from taskq.settings import Settings

    assert Settings.from_env(settings.to_env()) == settings


def test_a_tenant_over_its_rate_limit_gets_429_and_nothing_is_written(broker):
    import time

    from taskq.gateway import create_app

    client = create_app(broker.settings.replace(rate_limit_per_s=3)).test_client()
    started = time.time()
    responses = [create(client, {"input": {}, "processor": "echo"}) for _ in range(8)]
    seconds = int(time.time()) - int(started) + 1  # the one-second windows these requests fell in
    accepted = [r for r in responses if r.status_code == 202]
    limited = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(limited) == 8 and limited
    assert len(accepted) <= 3 * seconds
    assert limited[0].headers["Retry-After"] == "1" and "rate limit" in limited[0].json["error"]["message"]
    assert broker.redis.llen("rq:queue:default") == len(accepted)
    other = create(client, {"input": {}, "processor": "echo"}, headers={"x-api-key": OTHER_KEY})
    assert other.status_code == 202  # another tenant has its own budget


# -- fields taskq accepts and does not act on: named in the run's warnings

# One of each field of the Parallel API's run request that taskq does not act on, as
# the SDK would send it; what any of them becomes in taskq is decided in models.py.
NOT_ACTED_ON_VALUES = {
    "source_policy": {"include_domains": ["example.com"]},
    "mcp_servers": [{"name": "m", "url": "https://mcp.example.com"}],
    "previous_interaction_id": "trun_" + "0" * 32,
    "enable_events": True,
    "advanced_settings": {"location": "us"},
    "memory_scope_key": "team-a",
}


def warned_fields(run: dict) -> list[str]:  # type: ignore[type-arg]
    return [w["detail"]["field"] for w in run["warnings"] or []]


def test_every_field_taskq_does_not_act_on_is_named_in_the_runs_warnings_on_every_read(client, broker, drain):
    from taskq.models import NOT_ACTED_ON

    # Given a request with each accepted-but-unused field, an unknown one, and unknown nested ones
    assert set(NOT_ACTED_ON_VALUES) == set(NOT_ACTED_ON)
    body = {
        "input": {"n": 1},
        "processor": "echo",
        "metadata": {"k": "v"},
        **NOT_ACTED_ON_VALUES,
        "made_up": 1,
        "webhook": {"url": "http://127.0.0.1:9/hook", "retries": 9},
        "task_spec": {"output_schema": {"type": "json", "json_schema": {"type": "object"}, "strict": True}},
    }
    expected = [*NOT_ACTED_ON_VALUES, "made_up", "task_spec.output_schema.strict", "webhook.retries"]

    # When it is created, Then the 202 names each of them once, and nothing it acts on
    created = create(client, body, headers={**HEADERS, "Idempotency-Key": "warn-1"})
    assert created.status_code == 202
    run = created.json
    assert sorted(warned_fields(run)) == sorted(expected)
    assert all(w["type"] == "warning" and w["message"].startswith(w["detail"]["field"] + ": ") for w in run["warnings"])
    known = {w["detail"]["field"]: w["message"] for w in run["warnings"]}
    assert all("does not act on it" in known[name] for name in NOT_ACTED_ON_VALUES)
    assert "not a field taskq knows" in known["made_up"] and "not a field taskq knows" in known["webhook.retries"]
    # And no ignored value is stored: the webhook kept is the one taskq acts on
    assert "retries" not in broker.redis.hget(keys.run(run["run_id"]), "webhook")

    # And every later read shows the same warnings: the run, the list, a replay, the result
    assert client.get(f"/v1/tasks/runs/{run['run_id']}", headers=HEADERS).json["warnings"] == run["warnings"]
    listed = client.get("/v1/tasks/runs", headers=HEADERS).json["runs"]
    assert [r["warnings"] for r in listed if r["run_id"] == run["run_id"]] == [run["warnings"]]
    replay = create(client, body, headers={**HEADERS, "Idempotency-Key": "warn-1"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json["warnings"] == run["warnings"]
    drain()
    assert (
        client.get(f"/v1/tasks/runs/{run['run_id']}/result?timeout=5", headers=HEADERS).json["run"]["warnings"]
        == run["warnings"]
    )


def test_a_request_of_only_fields_taskq_acts_on_has_no_warnings(client):
    body = {
        "input": "text",
        "processor": "shout",
        "metadata": {"k": 1},
        "task_spec": {"input_schema": "any text", "output_schema": {"type": "text", "description": "loud"}},
        "callback_webhook": {
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["task_run.status"],
            "secret": None,
            "headers": {},
        },
    }
    run = create(client, body).json
    assert run["warnings"] is None
    assert client.get(f"/v1/tasks/runs/{run['run_id']}", headers=HEADERS).json["warnings"] is None


def test_warnings_are_bounded_however_many_fields_a_request_ignores(client, broker):
    from taskq.run import MAX_FIELD_CHARS, MAX_WARNINGS

    many = {f"extra_{i}": i for i in range(MAX_WARNINGS + 10)}
    run = create(client, {"input": {}, "processor": "echo", **many, "x" * 5000: 1}).json
    assert len(run["warnings"]) == MAX_WARNINGS
    assert [w["detail"]["field"] for w in run["warnings"][:-1]] == list(many)[: MAX_WARNINGS - 1]
    assert run["warnings"][-1]["detail"] == {"count": 12}  # the other 11 extra_ and the long one
    long = create(client, {"input": {}, "processor": "echo", "y" * 5000: 1}).json["warnings"][0]["detail"]["field"]
    assert len(long) == MAX_FIELD_CHARS and long.startswith("yyy")
    assert len(broker.redis.hget(keys.run(run["run_id"]), "warnings")) < MAX_WARNINGS * 2 * (MAX_FIELD_CHARS + 100)


def test_each_run_of_a_group_add_names_the_fields_its_input_and_the_request_gave(client):
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    inputs = [
        {"input": {"i": 0}, "processor": "echo", "source_policy": {"include_domains": ["a.com"]}},
        {"input": {"i": 1}, "processor": "echo"},
        {
            "input": {"i": 2},
            "processor": "echo",
            "enable_events": True,
            "webhook": {"url": "http://127.0.0.1:9/h", "x": 1},
        },
    ]
    body = {"inputs": inputs, "refresh_status": True, "default_task_spec": {"output_schema": "text", "odd": 1}}
    added = client.post(f"/v1/tasks/groups/{gid}/runs", json=body, headers=HEADERS)
    assert added.status_code == 200, added.json
    runs = [client.get(f"/v1/tasks/groups/{gid}/runs/{rid}", headers=HEADERS).json for rid in added.json["run_ids"]]
    shared = ["refresh_status", "default_task_spec.odd"]
    assert [warned_fields(r) for r in runs] == [
        [*shared, "inputs.0.source_policy"],
        shared,
        [*shared, "inputs.2.enable_events", "inputs.2.webhook.x"],
    ]
    by_field = {w["detail"]["field"]: w["message"] for r in runs for w in r["warnings"]}
    assert (
        "does not act on it" in by_field["inputs.0.source_policy"]
        and "not a field taskq knows" in by_field["refresh_status"]
    )


def test_a_runs_webhook_carries_its_warnings(client, spawn, broker):
    from tests.receiver import serving

    with serving() as receiver:
        body = {"input": {}, "processor": "echo", "enable_events": True, "webhook": {"url": receiver.url("/hook")}}
        run_id = create(client, body).json["run_id"]
        assert client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS).json["status"] == "cancelled"
        spawn("dispatcher", settings=broker.settings)
        wait_until(lambda: receiver.at("/hook"), timeout_s=20)
        payload = json.loads(receiver.at("/hook")[0].body)
    assert payload["data"]["run_id"] == run_id and warned_fields(payload["data"]) == ["enable_events"]
