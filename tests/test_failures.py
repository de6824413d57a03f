"""Nothing is lost: killed workers, SIGTERM, Redis restarts, cancels, expiry.

These tests kill real processes. Intervals are short (see conftest.fast_settings):
heartbeat 0.2 s, lease 1 s, reaper every 0.2 s, shutdown grace 2 s.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

from taskq import events, keys, sync
from taskq.broker import Broker
from taskq.engine.engine import Engine
from taskq.engine.processes import Children
from taskq.gateway import create_app
from taskq.webhooks.dispatcher import Dispatcher
from tests.conftest import HEADERS, POOLS, RedisServer, _descendants, fast_settings, wait_until


def submit(client, processor, input):  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor}, headers=HEADERS)
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def get(client, run_id):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json


def wait_status(client, run_id, *statuses, timeout_s=30):  # type: ignore[no-untyped-def]
    return wait_until(lambda: (run := get(client, run_id))["status"] in statuses and run, timeout_s=timeout_s)


def state_events(broker, run_id):  # type: ignore[no-untyped-def]
    return [f["status"] for _id, f in events.run_entries(broker, run_id) if f["type"] == "task_run.state"]


@pytest.mark.parametrize("pool", POOLS)
def test_killed_worker_runs_in_flight_are_all_retried_and_complete_exactly_once(broker, client, worker, pool):
    # Given a worker holding four runs at once
    first = worker(pool, name="first", concurrency=4)
    run_ids = [submit(client, "sleep", {"seconds": 2}) for _ in range(4)]
    for run_id in run_ids:
        wait_status(client, run_id, "running")

    # When it is killed with SIGKILL (its children with it) and another starts
    first.kill()
    killed_at = time.monotonic()
    worker(pool, name="second", concurrency=4)
    for run_id in run_ids:
        wait_until(lambda: get(client, run_id)["errors"], timeout_s=30)  # noqa: B023
    detection_s = time.monotonic() - killed_at

    # Then every one is retried once and completes exactly once
    for run_id in run_ids:
        done = wait_status(client, run_id, "completed")
        assert done["attempts"] == 2
        assert done["errors"][0]["message"] == "worker lost" and done["errors"][0]["detail"]["attempt"] == 1
        assert state_events(broker, run_id) == ["queued", "running", "queued", "running", "completed"]
    print(f"worker lost detected and runs requeued {detection_s:.2f} s after SIGKILL")


def test_killed_worker_on_the_last_attempt_fails_the_run_with_worker_lost(client, worker):
    only = worker()
    run_id = submit(client, "hold", {"seconds": 30})
    wait_status(client, run_id, "running")
    only.kill()
    worker()  # what a supervisor does: start it again; its reaper finds the run
    run = wait_status(client, run_id, "failed")
    assert run["attempts"] == 1 and run["error"]["message"] == "worker lost"


def test_a_frozen_workers_run_is_taken_over_and_its_late_result_dropped(broker, client, worker):
    paused = worker(name="paused")
    run_id = submit(client, "sleep", {"seconds": 2})
    wait_status(client, run_id, "running")

    pids = [paused.pid, *_descendants(paused.pid)]
    for pid in pids:  # a network partition, as far as Redis can tell
        os.kill(pid, signal.SIGSTOP)
    worker(name="healthy")
    wait_until(lambda: get(client, run_id)["attempts"] == 2)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)

    run = wait_status(client, run_id, "completed")
    assert run["attempts"] == 2
    wait_until(lambda: "lease lost" in paused.output() or "result dropped" in paused.output())


@pytest.mark.parametrize("pool", POOLS)
def test_sigterm_lets_short_runs_in_flight_finish(client, worker, pool):
    w = worker(pool, concurrency=3)
    run_ids = [submit(client, "sleep", {"seconds": 0.8}) for _ in range(3)]
    for run_id in run_ids:
        wait_status(client, run_id, "running")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    for run_id in run_ids:
        run = get(client, run_id)
        assert run["status"] == "completed" and run["attempts"] == 1


@pytest.mark.parametrize("pool", [*POOLS, "asyncio"])
def test_sigterm_puts_long_runs_back_on_the_queue_after_the_grace_period(client, worker, pool):
    # Given three long runs in flight (and one short one, which finishes in the grace)
    processor = "aio_sleep" if pool == "asyncio" else "sleep"
    w = worker("threads" if pool == "asyncio" else pool, concurrency=4)
    run_ids = [submit(client, processor, {"seconds": 6}) for _ in range(3)]
    short = submit(client, processor, {"seconds": 0.5})
    for run_id in [*run_ids, short]:
        wait_status(client, run_id, "running", "completed")

    # When the worker is told to stop
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0

    # Then the long ones are back on the queue, no retry spent, and run again later
    assert get(client, short)["status"] == "completed"
    for run_id in run_ids:
        run = get(client, run_id)
        assert run["status"] == "queued" and run["attempts"] == 1 and run["errors"] == []
    worker("threads" if pool == "asyncio" else pool, concurrency=4)
    for run_id in run_ids:
        run = wait_status(client, run_id, "completed")
        assert run["attempts"] == 2 and run["max_retries"] == 3


def test_a_signal_handler_can_set_the_event_its_thread_is_waiting_on(broker):
    # SIGTERM's handler runs in the main thread, possibly while that thread holds
    # the event's lock (inside wait or clear); the worker's and the dispatcher's
    # handlers set such events, which must not deadlock then.
    event = sync.Event()
    woken = threading.Event()

    def handler_inside_the_wait() -> None:
        with event._cond:  # where the main thread is when the signal lands
            event.set()
        assert event.wait(0)  # the flag was set: returns at once
        woken.set()

    thread = threading.Thread(target=handler_inside_the_wait, daemon=True)
    thread.start()
    thread.join(5)
    assert woken.is_set()
    # and what the handlers set is such an event
    engine, dispatcher = Engine(broker, {}, ["default"], concurrency=1), Dispatcher(broker)
    events = (engine._wake, engine.supervisor._wake, dispatcher.stopping, dispatcher._freed)
    assert all(isinstance(e, sync.Event) for e in events)


@pytest.mark.processes
def test_runs_accepted_before_a_redis_restart_all_complete(tmp_path, spawn, worker):
    server = RedisServer(tmp_path)
    server.start()
    try:
        settings = fast_settings(server.url)
        client = create_app(settings).test_client()
        broker = Broker(settings)
        from taskq.processor import advertise, load_apps

        advertise(broker.redis, load_apps(settings.app).values(), settings)
        before = [submit(client, "echo", {"n": i}) for i in range(50)]

        server.stop("shutdown")
        assert (
            client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS).status_code == 503
        )
        server.start()

        w = spawn("worker", "--pool", "threads", settings=settings)
        wait_until(lambda: all(get(client, r)["status"] == "completed" for r in before), timeout_s=60)

        server.stop("shutdown")  # and again, under a running worker
        server.start()
        after = [submit(client, "echo", {"n": i}) for i in range(20)]
        wait_until(lambda: all(get(client, r)["status"] == "completed" for r in after), timeout_s=60)
        assert w.proc.poll() is None
        broker.close()
    finally:
        server.stop("kill")


def test_cancel_a_queued_run_cancels_it_at_once_and_it_never_starts(client, drain):
    run_id = submit(client, "echo", {})
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 200 and r.json["status"] == "cancelled" and r.json["is_active"] is False
    marker = submit(client, "echo", {})
    drain()
    assert get(client, marker)["status"] == "completed"  # the worker has been through the queue
    run = get(client, run_id)
    assert run["status"] == "cancelled" and run["attempts"] == 0


@pytest.mark.parametrize("pool", [*POOLS, "asyncio"])
def test_cancel_of_one_running_run_stops_that_run_only(client, worker, pool):
    processor = "aio_sleep" if pool == "asyncio" else "sleep"
    worker("threads" if pool == "asyncio" else pool, concurrency=3)
    run_id = submit(client, processor, {"seconds": 30})
    others = [submit(client, processor, {"seconds": 3}) for _ in range(2)]
    for r_id in [run_id, *others]:
        wait_status(client, r_id, "running")
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 200 and r.json["status"] == "cancelling" and r.json["is_active"] is True
    run = wait_status(client, run_id, "cancelled", timeout_s=10)
    assert run["attempts"] == 1 and run["finished_at"]
    # its slot is free again at once, not 30 s later; the others were left alone
    assert wait_status(client, submit(client, "echo", {}), "completed", timeout_s=10)
    for other in others:
        done = wait_status(client, other, "completed")
        assert done["attempts"] == 1 and done["errors"] == []


def test_cancel_a_finished_run_is_409(client, drain):
    run_id = submit(client, "echo", {})
    drain()
    assert get(client, run_id)["status"] == "completed"
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 409 and "completed" in r.json["error"]["message"]
    assert get(client, run_id)["status"] == "completed"


def test_a_finished_run_expires_after_the_retention_and_then_answers_410(broker, drain):
    # Long enough that the read below comes before the expiry on a loaded machine.
    short = broker.settings.replace(retention_s=3)
    client = create_app(short).test_client()
    run_id = submit(client, "echo", {})
    drain(settings=short)
    assert get(client, run_id)["status"] == "completed"
    assert 0 < broker.redis.ttl(keys.run(run_id)) <= 3
    wait_until(lambda: not broker.redis.exists(keys.run(run_id), keys.run_events(run_id)), timeout_s=15)
    r = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS)
    assert r.status_code == 410 and "expired" in r.json["error"]["message"]


def test_a_worker_only_takes_runs_of_processors_it_serves_and_a_run_nobody_serves_says_why(broker, client, worker):
    broker.redis.zrem(keys.WORKERS, "test-worker")  # only real workers from here on
    other_app = broker.settings.replace(app=("taskq.processors",))  # serves only the built-in `http`
    worker(settings=other_app, name="old-deploy")
    run_id = submit(client, "echo", {"n": 1})
    # Given only a worker that does not serve `echo`: the run waits, untouched, saying why
    waiting = wait_until(
        lambda: any(w["detail"].get("waiting") == "no_worker" for w in get(client, run_id)["warnings"] or [])
    )
    assert waiting and get(client, run_id)["status"] == "queued" and get(client, run_id)["attempts"] == 0
    # When one that serves it starts (on the same queue), it takes the run, once
    worker(name="new-deploy")
    run = wait_status(client, run_id, "completed")
    assert run["attempts"] == 1 and run["error"] is None and run["errors"] == []
    more = [submit(client, "echo", {"n": n}) for n in range(20)]
    for run_id in more:  # never handed back and forth: one attempt each
        assert wait_status(client, run_id, "completed")["attempts"] == 1


def test_a_child_process_is_replaced_after_max_runs_per_child(client, spawn, broker):
    w = spawn(
        "worker", "--pool", "processes", "--concurrency", "1", "--max-runs-per-child", "2", settings=broker.settings
    )
    run_ids = [submit(client, "whoami", {}) for _ in range(6)]
    runs = [wait_status(client, r, "completed", "failed") for r in run_ids]
    assert all(r["status"] == "completed" for r in runs)
    pids = [client.get(f"/v1/tasks/runs/{r}/result", headers=HEADERS).json["output"]["content"]["pid"] for r in run_ids]
    assert len(set(pids)) == 3 and w.pid not in pids  # two runs per child, never in the worker itself


@pytest.mark.processes
def test_a_closed_process_pool_leaves_no_child_alive_and_starts_none(broker):
    # A worker exits only once every child is gone (multiprocessing's exit handler
    # waits for them, and a child ignores SIGTERM), so a child that dies after the
    # close, as a late run's may, must not be replaced by one nobody will stop.
    children = Children(2, broker.settings, max_runs_per_child=0)
    children.wait_ready()
    started = list(children._all)
    children.drain()  # SIGTERM: ends that come now are not replaced
    children._replace(started[0])
    assert len(children._all) == 1
    children.close()
    children._replace(started[1])  # a late end, after the close
    assert children._all == set()
    assert not started[1].proc.is_alive()
    # A replaced child is stopped (and joined) by a thread of the pool: wait for it here
    # by polling, not by a second join of the same process (two joins race on waitpid).
    wait_until(lambda: not [c for c in multiprocessing.active_children() if c.name == "taskq-child"])


def test_sigterm_puts_back_a_run_whose_thread_is_stuck_in_a_c_call(client, worker):
    # `hold` blocks in one time.sleep(30): an exception raised in its thread lands
    # only when the sleep returns, so after the grace period (2 s) and STUCK_S the
    # worker puts the run back itself and exits; the thread's late result would be
    # refused (its token no longer holds the run).
    w = worker()
    run_id = submit(client, "hold", {"seconds": 30})
    wait_status(client, run_id, "running")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    run = get(client, run_id)
    assert run["status"] == "queued" and run["attempts"] == 1 and run["errors"] == []
    assert "did not stop within" in w.output()


def _worker_field(broker, field):  # type: ignore[no-untyped-def]
    """The field of the one worker registered besides the test's own (None when none is)."""
    names = [n for n in broker.redis.zrange(keys.WORKERS, 0, -1) if n != "test-worker"]
    return broker.redis.hget(keys.worker(names[0]), field) if len(names) == 1 else None


def test_a_run_stuck_in_a_c_call_past_its_timeout_fails_and_its_slot_goes_to_the_next_run(broker, client, worker):
    # `slow` (timeout 1 s) blocks in one time.sleep for an hour: the exception that
    # stops a thread cannot land in a C call. The run must still fail within
    # seconds, and the worker (one slot) must go on serving other runs meanwhile.
    worker(concurrency=1)
    stuck = submit(client, "slow", {"seconds": 3600})
    run = wait_status(client, stuck, "failed")
    assert run["error"]["message"] == "timed out after 1 s" and run["attempts"] == 1
    wait_until(lambda: _worker_field(broker, "abandoned") == "1")
    after = submit(client, "echo", {"n": 1})
    assert wait_status(client, after, "completed")["attempts"] == 1
    assert _worker_field(broker, "abandoned") == "1"  # the stuck thread still sleeps; the slot was replaced
    metrics = client.get("/metrics").get_data(as_text=True)
    assert any(
        line.startswith("taskq_worker_abandoned_threads{") and line.endswith(" 1.0") for line in metrics.splitlines()
    )


def test_a_cancel_ends_a_run_stuck_in_a_c_call_within_seconds(broker, client, worker):
    worker(concurrency=2)
    stuck = submit(client, "hold", {"seconds": 3600})
    wait_status(client, stuck, "running")
    assert client.post(f"/v1/tasks/runs/{stuck}/cancel", headers=HEADERS).json["status"] == "cancelling"
    assert wait_status(client, stuck, "cancelled", "cancelling")["status"] in ("cancelling", "cancelled")
    assert wait_status(client, stuck, "cancelled")["finished_at"] is not None
    wait_until(lambda: _worker_field(broker, "abandoned") == "1")


def test_a_worker_holding_too_many_abandoned_threads_restarts_itself(broker, client, worker):
    w = worker(settings=broker.settings.replace(max_abandoned_threads=1), concurrency=2)
    first = wait_until(lambda: broker.redis.smembers("rq:workers"))
    runs = [submit(client, "slow", {"seconds": 3600}) for _ in range(2)]
    for run_id in runs:
        assert wait_status(client, run_id, "failed")["error"]["message"] == "timed out after 1 s"
    # The same process (exec'd afresh) registers under a new name, with no thread left behind.
    wait_until(lambda: (now := broker.redis.smembers("rq:workers")) and now != first, timeout_s=30)
    assert w.proc.poll() is None and "restarting" in w.output()
    assert _worker_field(broker, "abandoned") in (None, "0")
    assert wait_status(client, submit(client, "echo", {}), "completed")["attempts"] == 1


@pytest.mark.parametrize("skew_s", [-60, 60])
def test_a_worker_whose_clock_is_off_by_a_minute_never_loses_or_doubles_a_run(broker, client, spawn, skew_s):
    # Leases, due times and deadlines are read off Redis's clock inside the scripts,
    # so a worker whose own clock is a minute behind (or ahead) neither has its runs
    # reaped from under it by a worker with a true clock, nor reaps theirs.
    workers_before = len(broker.redis.smembers("rq:workers"))
    argv = ["worker", "--concurrency", "3", "--log-level", "debug"]
    skewed = spawn(settings=broker.settings, command=[sys.executable, "-m", "tests.skewed_clock", str(skew_s), *argv])
    wait_until(lambda: len(broker.redis.smembers("rq:workers")) > workers_before or skewed.proc.poll() is not None)
    runs = [submit(client, "sleep", {"seconds": 3}) for _ in range(3)]
    wait_until(lambda: all(get(client, r)["status"] == "running" for r in runs))  # all three on the skewed worker
    true_worker = spawn(*argv, settings=broker.settings)
    runs += [submit(client, "sleep", {"seconds": 3}) for _ in range(3)]
    for run_id in runs:
        run = wait_status(client, run_id, "completed", "failed")
        assert run["status"] == "completed" and run["attempts"] == 1, (run, skewed.output()[-3000:])
        assert state_events(broker, run_id) == ["queued", "running", "completed"]
    assert true_worker.proc.poll() is None and skewed.proc.poll() is None
