"""Runs over HTTP: the Parallel TaskRun wire format, errors, tenants, idempotency."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from taskq import keys
from tests.conftest import API_KEY, HEADERS, OTHER_KEY


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
    assert broker.redis.lrange("rq:queue:default", 0, -1) == [run["run_id"] + "-1"]  # the RQ job of push 1


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
    body = {"input": {"age": "old"}, "processor": "echo", "task_spec": {"input_schema": {"type": "json", "json_schema": schema}}}
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
    r = app.test_client().post("/v1/tasks/runs", json={"input": {"x": "y" * 2000}, "processor": "echo"}, headers=HEADERS)
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
    other_tenant = create(client, {"input": {"n": 1}, "processor": "echo"}, headers={"x-api-key": OTHER_KEY, "Idempotency-Key": "order-17"})
    assert other_tenant.json["run_id"] != first.json["run_id"]


def test_concurrent_posts_with_one_idempotency_key_make_one_run(broker):
    from taskq.gateway import create_app

    app = create_app(broker.settings)

    def post(_: int) -> str:
        with app.test_client() as c:
            return create(c, {"input": {}, "processor": "echo"}, headers={**HEADERS, "Idempotency-Key": "k"}).json["run_id"]

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
