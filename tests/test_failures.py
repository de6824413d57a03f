"""Nothing is lost: killed workers, SIGTERM, Redis restarts, cancels, expiry.

These tests kill real processes. Intervals are short (see conftest.fast_settings):
heartbeat 0.2 s, lease 1 s, reaper every 0.2 s, shutdown grace 2 s.
"""

from __future__ import annotations

import signal
import time

import pytest

from taskq import keys
from taskq.broker import Broker
from taskq.gateway import create_app
from tests.conftest import HEADERS, RedisServer, fast_settings, wait_until


def submit(client, processor, input):  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor}, headers=HEADERS)
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def get(client, run_id):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json


def wait_status(client, run_id, *statuses, timeout_s=30):  # type: ignore[no-untyped-def]
    return wait_until(lambda: (run := get(client, run_id))["status"] in statuses and run, timeout_s=timeout_s)


@pytest.mark.parametrize("worker_class", ["fork", "simple"])
def test_killed_worker_run_is_retried_on_another_worker(client, worker, worker_class):
    first = worker(worker_class, name="first")
    run_id = submit(client, "sleep", {"seconds": 2})
    wait_status(client, run_id, "running")

    first.kill()  # SIGKILL, and its work horse with it
    killed_at = time.monotonic()
    worker(worker_class, name="second")
    requeued = wait_until(lambda: (run := get(client, run_id))["errors"] and run)
    detection_s = time.monotonic() - killed_at

    done = wait_status(client, run_id, "completed")
    assert done["attempts"] == 2
    assert done["errors"][0]["message"] == "worker lost"
    assert requeued["errors"][0]["detail"]["attempt"] == 1
    print(f"worker lost detected and run requeued {detection_s:.2f} s after SIGKILL")


def test_killed_worker_on_the_last_attempt_fails_the_run_with_worker_lost(client, worker):
    only = worker("fork")
    run_id = submit(client, "hold", {"seconds": 30})
    wait_status(client, run_id, "running")
    only.kill()
    worker("fork")  # what a supervisor does: start it again; its reaper finds the run
    run = wait_status(client, run_id, "failed")
    assert run["attempts"] == 1 and run["error"]["message"] == "worker lost"


def test_a_run_is_never_run_by_two_workers_at_once(broker, client, worker):
    paused = worker("fork", name="paused")
    run_id = submit(client, "sleep", {"seconds": 2})
    wait_status(client, run_id, "running")
    from tests.conftest import _descendants

    pids = [paused.pid, *_descendants(paused.pid)]
    for pid in pids:  # a network partition, as far as Redis can tell
        __import__("os").kill(pid, signal.SIGSTOP)
    worker("fork", name="healthy")
    wait_until(lambda: get(client, run_id)["attempts"] == 2)
    for pid in pids:
        __import__("os").kill(pid, signal.SIGCONT)

    run = wait_status(client, run_id, "completed")
    assert run["attempts"] == 2
    wait_until(lambda: "lease lost" in paused.output() or "result dropped" in paused.output())


@pytest.mark.parametrize("worker_class", ["fork", "simple"])
def test_sigterm_lets_a_short_run_finish(client, worker, worker_class):
    w = worker(worker_class)
    run_id = submit(client, "sleep", {"seconds": 0.8})
    wait_status(client, run_id, "running")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    run = get(client, run_id)
    assert run["status"] == "completed" and run["attempts"] == 1


@pytest.mark.parametrize("worker_class", ["fork", "simple"])
def test_sigterm_puts_a_long_run_back_on_the_queue_after_the_grace_period(client, worker, worker_class):
    w = worker(worker_class)
    run_id = submit(client, "sleep", {"seconds": 6})
    wait_status(client, run_id, "running")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    run = get(client, run_id)
    assert run["status"] == "queued" and run["attempts"] == 1 and run["errors"] == []

    worker(worker_class)
    run = wait_status(client, run_id, "completed")
    assert run["attempts"] == 2 and run["max_retries"] == 3


def test_runs_accepted_before_a_redis_restart_all_complete(tmp_path, spawn, worker):
    server = RedisServer(tmp_path)
    server.start()
    try:
        settings = fast_settings(server.url)
        client = create_app(settings).test_client()
        broker = Broker(settings)
        from taskq.processor import advertise, load_apps

        advertise(broker.redis, load_apps(settings.app).values(), {"retries": 3, "timeout_s": 600})
        before = [submit(client, "echo", {"n": i}) for i in range(50)]

        server.stop("shutdown")
        assert client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS).status_code == 503
        server.start()

        w = spawn("worker", "--worker-class", "simple", settings=settings)
        wait_until(lambda: all(get(client, r)["status"] == "completed" for r in before), timeout_s=60)

        server.stop("shutdown")  # and again, under a running worker
        server.start()
        after = [submit(client, "echo", {"n": i}) for i in range(20)]
        wait_until(lambda: all(get(client, r)["status"] == "completed" for r in after), timeout_s=60)
        assert w.proc.poll() is None
        broker.close()
    finally:
        server.stop("kill")


def test_cancel_a_queued_run_cancels_it_at_once_and_it_never_starts(client, worker):
    run_id = submit(client, "echo", {})
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 200 and r.json["status"] == "cancelled" and r.json["is_active"] is False
    worker("simple")
    marker = submit(client, "echo", {})
    wait_status(client, marker, "completed")  # the worker has been through the queue
    run = get(client, run_id)
    assert run["status"] == "cancelled" and run["attempts"] == 0


@pytest.mark.parametrize("worker_class", ["fork", "simple"])
def test_cancel_a_running_run_goes_cancelling_then_cancelled(client, worker, worker_class):
    worker(worker_class)
    run_id = submit(client, "sleep", {"seconds": 30})
    wait_status(client, run_id, "running")
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 200 and r.json["status"] == "cancelling" and r.json["is_active"] is True
    run = wait_status(client, run_id, "cancelled", timeout_s=10)
    assert run["attempts"] == 1 and run["finished_at"]
    # the worker is free again at once, not 30 s later
    assert wait_status(client, submit(client, "echo", {}), "completed", timeout_s=10)


def test_cancel_a_finished_run_is_409(client, worker):
    worker("simple")
    run_id = submit(client, "echo", {})
    wait_status(client, run_id, "completed")
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 409 and "completed" in r.json["error"]["message"]
    assert get(client, run_id)["status"] == "completed"


def test_a_finished_run_expires_after_the_retention_and_then_answers_410(broker, spawn, worker):
    short = broker.settings.replace(retention_s=1)
    worker("simple", settings=short)
    client = create_app(short).test_client()
    run_id = submit(client, "echo", {})
    wait_status(client, run_id, "completed")
    wait_until(lambda: not broker.redis.exists(keys.run(run_id), keys.run_events(run_id)), timeout_s=10)
    r = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS)
    assert r.status_code == 410 and "expired" in r.json["error"]["message"]


def test_a_worker_that_does_not_serve_the_processor_hands_the_run_back(broker, client, worker):
    other_app = broker.settings.replace(app=("taskq.processors",))  # serves only the built-in `http`
    worker("simple", settings=other_app, name="old-deploy")
    run_id = submit(client, "echo", {"n": 1})
    handed = wait_until(lambda: (run := get(client, run_id))["attempts"] >= 1 and run["status"] == "queued" and run)
    assert handed["errors"] == []  # not a failure, and no retry used up
    worker("simple", name="new-deploy")
    run = wait_status(client, run_id, "completed")
    assert run["error"] is None


def test_a_run_whose_worker_died_as_it_took_it_is_put_back(broker, client, worker):
    # What a single-queue RQ worker does first (BLMOVE into RQ's intermediate list),
    # and then it dies before taskq's claim: the run is queued and on no queue.
    run_id = submit(client, "echo", {"n": 1})
    job_id = broker.redis.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")
    assert job_id == f"{run_id}-1" and get(client, run_id)["status"] == "queued"

    worker("simple")
    run = wait_status(client, run_id, "completed")
    assert run["attempts"] == 1
    assert broker.redis.llen("rq:queue:default:intermediate") == 0
