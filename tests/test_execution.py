"""Runs executed by workers: results, errors, retries, timeouts. Most run in this
process (the `drain` fixture); those about a real process or a pool run one."""

from __future__ import annotations

import json

import pytest

from taskq import events, keys
from taskq.client import RunHandle, default_tenant
from taskq.errors import Conflict
from tests.conftest import HEADERS, POOLS, wait_until


def submit(client, processor, input, **extra):  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor, **extra}, headers=HEADERS)
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def result(client, run_id, timeout=20):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/tasks/runs/{run_id}/result?timeout={timeout}", headers=HEADERS)


@pytest.mark.parametrize("pool", POOLS)
def test_json_and_text_runs_round_trip(client, worker, pool):
    worker(pool)
    json_run = submit(client, "research", {"name": "Acme"}, metadata={"source": "test"})
    text_run = submit(client, "shout", "hello")

    got = result(client, json_run)
    assert got.status_code == 200
    assert got.json["output"] == {
        "type": "json",
        "content": {"name": "Acme", "summary": "Acme makes things.", "founded": None},
        "basis": [],
    }
    run = got.json["run"]
    assert run["status"] == "completed" and run["is_active"] is False and run["attempts"] == 1
    assert run["metadata"] == {"source": "test"}
    assert run["created_at"] <= run["started_at"] <= run["finished_at"] == run["modified_at"]
    assert run["error"] is None

    got = result(client, text_run)
    assert got.json["output"]["type"] == "text" and got.json["output"]["content"] == "HELLO"


def test_put_from_python_makes_the_same_run_as_http(broker, client, drain):
    from workers.app import echo

    handle = echo.put({"x": 1}, metadata={"via": "python"}, broker=broker)
    drain()
    assert handle.result(timeout_s=20) == {"x": 1}
    over_http = client.get(f"/v1/tasks/runs/{handle.run_id}", headers=HEADERS).json
    assert over_http["status"] == "completed" and over_http["metadata"] == {"via": "python"}
    assert handle.status().status.value == "completed"


def test_status_changes_are_events_on_the_run_stream(broker, client, drain):
    run_id = submit(client, "research", {"name": "Acme"})
    drain()
    assert result(client, run_id).status_code == 200
    seen = [fields for _id, fields in events.run_entries(broker, run_id)]
    states = [e["status"] for e in seen if e["type"] == "task_run.state"]
    assert states == ["queued", "running", "completed"]
    assert any(e["type"] == "task_run.progress" and "Acme" in e["message"] for e in seen)


def test_a_failing_run_with_no_retries_fails_with_its_error(client, drain):
    run_id = submit(client, "broken", {"message": "kaput"})
    drain()
    got = result(client, run_id)
    assert got.status_code == 409 and "failed" in got.json["error"]["message"]
    run = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "failed" and run["attempts"] == 1
    assert run["error"]["message"] == "ValueError: kaput"
    assert run["error"]["ref_id"] and run["error"]["detail"] == {
        "type": "ValueError",
        "message": "ValueError: kaput",
        "attempt": 1,
    }


def test_a_flaky_run_that_fails_twice_then_succeeds_ends_completed_after_3_attempts(client, drain):
    run_id = submit(client, "flaky", {"failures": 2})
    drain()
    got = result(client, run_id)
    assert got.status_code == 200 and got.json["output"]["content"] == {"attempt": 3}
    run = got.json["run"]
    assert run["attempts"] == 3 and run["error"] is None
    assert [e["message"] for e in run["errors"]] == [
        "Flaky: attempt 1 fails on purpose",
        "Flaky: attempt 2 fails on purpose",
    ]


def test_a_run_that_keeps_failing_gets_three_retries_then_fails(client, drain):
    run_id = submit(client, "flaky", {"failures": 10})
    drain()
    assert result(client, run_id).status_code == 409
    run = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "failed" and run["attempts"] == 4 and len(run["errors"]) == 4


def test_between_attempts_the_run_is_queued_with_next_attempt_at(broker, client, worker):
    slow_retries = broker.settings.replace(retry_backoff_base_s=30, retry_backoff_cap_s=30)
    worker(settings=slow_retries)
    run_id = submit(client, "flaky", {"failures": 1})

    run = wait_until(
        lambda: (
            (r := client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json)["attempts"] == 1
            and r["status"] == "queued"
            and r
        )
    )
    assert run["next_attempt_at"] and run["error"]["message"] == "Flaky: attempt 1 fails on purpose"  # type: ignore[index]
    assert broker.redis.zscore(keys.delayed(0), run_id) is not None


def test_a_non_retryable_error_fails_at_once(client, drain):
    run_id = submit(client, "flaky", {"failures": 1}, metadata={})
    # flaky retries only Flaky; the `broken` processor retries nothing; a bad output is never retried
    bad = submit(client, "bad_output", {})
    drain()
    assert result(client, run_id).status_code == 200
    assert result(client, bad).status_code == 409
    run = client.get(f"/v1/tasks/runs/{bad}", headers=HEADERS).json
    assert run["status"] == "failed" and run["attempts"] == 1
    assert "does not fit its return type" in run["error"]["message"]


def test_output_schema_is_checked_by_the_worker(client, drain):
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    spec = {"output_schema": {"type": "json", "json_schema": schema}}
    bad = submit(client, "echo", {"nope": 1}, task_spec=spec)
    good = submit(client, "echo", {"answer": "yes"}, task_spec=spec)
    drain()
    assert result(client, good).status_code == 200
    assert result(client, bad).status_code == 409
    run = client.get(f"/v1/tasks/runs/{bad}", headers=HEADERS).json
    assert run["status"] == "failed" and "output_schema" in run["error"]["message"] and run["attempts"] == 1


@pytest.mark.parametrize("pool", POOLS)
def test_a_run_past_its_timeout_fails_saying_so_and_only_that_run(client, worker, pool):
    # `slow` blocks in time.sleep (a C call): a thread gets the stop when the sleep
    # returns, a child process is killed at once. Either way only that run fails.
    worker(pool, concurrency=2)
    run_id = submit(client, "slow", {"seconds": 3})
    other = submit(client, "sleep", {"seconds": 2})
    assert result(client, run_id).status_code == 409
    run = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "failed" and run["error"]["message"] == "timed out after 1 s"
    assert run["error"]["detail"]["type"] == "TimeoutError"
    got = result(client, other)
    assert got.status_code == 200 and got.json["run"]["attempts"] == 1


def test_an_async_run_past_its_timeout_is_cancelled_at_once_and_fails(client, drain):
    run_id = submit(client, "aio_slow", {"seconds": 30})
    drain()
    run = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "failed" and run["error"]["message"] == "timed out after 1 s"


def test_result_handle_raises_for_a_failed_run(broker, drain):
    from workers.app import broken

    handle = broken.put({}, broker=broker)
    drain()
    assert isinstance(handle, RunHandle)
    with pytest.raises(Conflict, match="failed"):
        handle.wait(timeout_s=20)
    assert default_tenant(broker) == handle.tenant


def test_round_trip_through_a_real_gunicorn(gunicorn, worker):
    import requests

    url = gunicorn()
    worker()
    created = requests.post(
        f"{url}/v1/tasks/runs", json={"input": "quiet", "processor": "shout"}, headers=HEADERS, timeout=10
    )
    assert created.status_code == 202
    run_id = created.json()["run_id"]
    got = requests.get(f"{url}/v1/tasks/runs/{run_id}/result", params={"timeout": 20}, headers=HEADERS, timeout=30)
    assert got.status_code == 200 and got.json()["output"] == {"type": "text", "content": "QUIET", "basis": []}
    assert requests.post(f"{url}/v1/tasks/runs", data=b"x" * 10, headers=HEADERS, timeout=10).status_code == 400
    too_big = requests.post(f"{url}/v1/tasks/runs", data=b"x" * (2 << 20), headers=HEADERS, timeout=10)
    assert too_big.status_code == 413 and too_big.json()["type"] == "error"


def test_immediate_retries_never_lose_a_run(broker, client, drain):
    # A retry due at once is pushed while the attempt that failed is still being
    # ended; each push has its own RQ job id, so neither can take the other's.
    run_ids = [submit(client, "flaky", {"failures": 2}) for _ in range(30)]
    drain(settings=broker.settings.replace(retry_backoff_base_s=0.0, reaper_interval_s=0.01))
    for run_id in run_ids:
        got = result(client, run_id)
        assert got.status_code == 200 and got.json["run"]["attempts"] == 3


def test_an_output_over_the_size_limit_fails_the_run_saying_so(broker, client, drain):
    small = submit(client, "echo", {"x": "y"})
    big = submit(client, "echo", {"x": "y" * 200})
    drain(settings=broker.settings.replace(max_output_bytes=100))
    assert result(client, small).status_code == 200
    assert result(client, big).status_code == 409
    run = client.get(f"/v1/tasks/runs/{big}", headers=HEADERS).json
    assert run["status"] == "failed" and run["attempts"] == 1
    assert "over the limit of 100" in run["error"]["message"]


def test_a_worker_advertises_its_processors_so_the_gateway_needs_no_user_code(broker, client, worker):
    broker.redis.delete(keys.PROCESSORS)  # as on a fresh Redis, before any worker started
    r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS)
    assert r.status_code == 422 and "is a worker running?" in r.json["error"]["message"]
    worker()
    spec = json.loads(wait_until(lambda: broker.redis.hget(keys.PROCESSORS, "research")))  # type: ignore[arg-type]
    assert spec["queue"] == "default" and spec["retries"] == 3
    assert spec["input_schema"]["required"] == ["name"]
    assert result(client, submit(client, "echo", {"n": 1})).status_code == 200


def test_a_processor_timeout_is_capped_at_the_maximum(broker):
    from taskq import run
    from taskq.catalog import Catalog
    from taskq.models import RunInput
    from taskq.processor import Processor

    spec = Processor(name="long", func=lambda inp: inp, timeout_s=13 * 3600).spec(broker.settings)
    new = run.prepare(broker, Catalog(broker, {"long": spec}), "t", RunInput(input={}, processor="long"))
    assert new.fields["timeout_s"] == spec["timeout_s"] == broker.settings.max_timeout_s == 12 * 3600


def test_async_processors_run_many_at_once_on_the_event_loop(broker, client, drain):
    run_ids = [submit(client, "aio_sleep", {"seconds": 0.5}) for _ in range(20)]
    drain(concurrency=20)
    runs = [result(client, r).json["run"] for r in run_ids]
    assert all(r["status"] == "completed" and r["attempts"] == 1 for r in runs)
    # all were in flight together: every run started before any ended
    assert max(r["started_at"] for r in runs) < min(r["finished_at"] for r in runs)
    seen = [f for _id, f in events.run_entries(broker, run_ids[0])]
    assert any(e["type"] == "task_run.progress" and e["message"] == "awaiting" for e in seen)


def test_a_worker_holds_up_to_its_concurrency_and_claims_no_more(broker, client, drain):
    run_ids = [submit(client, "sleep", {"seconds": 0.5}) for _ in range(6)]
    drain(concurrency=3)
    runs = sorted((result(client, r).json["run"] for r in run_ids), key=lambda r: r["started_at"])
    assert all(r["status"] == "completed" for r in runs)
    # three at once: the first three overlap; the last three start only as those end
    assert max(r["started_at"] for r in runs[:3]) < min(r["finished_at"] for r in runs[:3])
    assert min(r["started_at"] for r in runs[3:]) >= min(r["finished_at"] for r in runs[:3])


def test_put_from_inside_a_run_makes_a_run_that_completes(broker, client, drain):
    parent = submit(client, "spawner", {"n": 3})
    drain()
    got = result(client, parent)
    assert got.status_code == 200
    children = got.json["output"]["content"]["children"]
    assert len(children) == 3
    for child in children:
        assert result(client, child).json["run"]["status"] == "completed"


def test_the_claim_leaves_rq_nothing_to_clean_up(broker, client, drain):
    run_ids = [submit(client, "echo", {"n": i}) for i in range(10)]
    assert broker.redis.llen("rq:queue:default") == 10
    drain()
    assert all(result(client, r).status_code == 200 for r in run_ids)
    assert broker.redis.llen("rq:queue:default") == 0
    assert not broker.redis.keys("rq:job:*") and not broker.redis.zcard(keys.running(0))


def test_rq_sees_the_queue_depth_and_the_worker(broker, client, worker):
    import redis
    import rq

    connection = redis.Redis.from_url(broker.settings.redis_url)
    run_ids = [submit(client, "echo", {"n": i}) for i in range(5)]
    assert rq.Queue("default", connection=connection).count == 5  # what `rq info` shows
    worker(name="seen-by-rq")
    assert "seen-by-rq" in {w.name for w in rq.Worker.all(connection=connection)}
    assert all(result(client, r).status_code == 200 for r in run_ids)
    assert rq.Queue("default", connection=connection).count == 0
    connection.close()


def test_rq_shows_the_worker_busy_while_it_holds_a_run_and_idle_otherwise(broker, client, worker):
    worker(name="stateful")
    state = lambda: broker.redis.hget("rq:worker:stateful", "state")  # noqa: E731
    assert state() == "idle"
    run_id = submit(client, "sleep", {"seconds": 2})
    wait_until(lambda: state() == "busy")
    assert result(client, run_id).status_code == 200
    wait_until(lambda: state() == "idle")


def sse_runs(text):  # type: ignore[no-untyped-def]
    """The TaskRuns of the task_run.state events of an SSE body, in order."""
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    return [e["run"] for e in events if e["type"] == "task_run.state"]


def test_a_replayed_event_shows_the_run_as_it_was_then(client, drain):
    # `flaky` fails twice, then completes: read afterwards, each state event must
    # show the attempts, times and error the run had at that moment, not at its end.
    run_id = submit(client, "flaky", {"failures": 2})
    drain()
    body = client.get(f"/v1/tasks/runs/{run_id}/events", headers=HEADERS).get_data(as_text=True)
    runs = sse_runs(body)
    assert [r["status"] for r in runs] == ["queued", "running", "queued", "running", "queued", "running", "completed"]
    assert [r["attempts"] for r in runs] == [0, 1, 1, 2, 2, 3, 3]
    first, retry, last = runs[0], runs[2], runs[-1]
    assert first["started_at"] is None and first["error"] is None and first["errors"] == []
    assert retry["error"]["message"] == "Flaky: attempt 1 fails on purpose" and len(retry["errors"]) == 1
    assert retry["next_attempt_at"] is not None and retry["finished_at"] is None
    assert runs[1]["next_attempt_at"] is None and runs[1]["started_at"] is not None
    assert last["error"] is None and len(last["errors"]) == 2 and last["finished_at"] == last["modified_at"]
    assert len({r["modified_at"] for r in runs}) >= 2 and runs == sorted(runs, key=lambda r: r["modified_at"])
