"""When runs start: priorities within a lane, runs at a set time, and schedules that
fire exactly once per tick however many workers serve them (docs/scheduling.md).

Claim order is read from the claim step itself (a Claimer taking one run at a time,
in this process), so it is exact; times come from Redis's clock."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from taskq import events, keys
from taskq.cli import main
from taskq.client import default_tenant
from taskq.engine.claims import Claimer
from taskq.engine.scheduler import Scheduler
from taskq.errors import ConfigurationError
from taskq.processor import Processor, advertise, load_apps
from taskq.record import load_runs
from taskq.schedule import Schedule
from tests.conftest import API_KEY, HEADERS, OTHER_KEY, settings_env, wait_until


def submit(client, processor="echo", input=None, key=API_KEY, **fields):  # type: ignore[no-untyped-def]
    body = {"input": {} if input is None else input, "processor": processor, **fields}
    r = client.post("/v1/tasks/runs", json=body, headers={"x-api-key": key})
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def get(client, run_id, key=API_KEY):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/tasks/runs/{run_id}", headers={"x-api-key": key}).json


def taken_in_order(broker, n, processors=("echo",)):  # type: ignore[no-untyped-def]
    """The ids of the next n runs a worker would take, one claim at a time."""
    served = [p for name, p in load_apps(broker.settings.app).items() if name in processors]
    claimer = Claimer(broker, served, "order:1")
    return [r.id for _ in range(n) for r in claimer.claim(1)]


def rfc3339(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


# -- priority ----------------------------------------------------------------------


def test_a_high_priority_run_goes_before_a_normal_backlog_and_a_low_one_after(client, broker):
    backlog = [submit(client, input={"i": i}) for i in range(5)]
    low = submit(client, priority="low")
    high = submit(client, priority="high")
    assert get(client, high)["priority"] == "high" and get(client, backlog[0])["priority"] == "normal"
    assert taken_in_order(broker, 7) == [high, *backlog, low]


def test_priority_orders_runs_within_a_lane_and_tenants_still_take_turns(client, broker):
    mine = [submit(client, priority="high") for _ in range(4)]
    theirs = submit(client, priority="low", key=OTHER_KEY)
    order = taken_in_order(broker, 5)
    assert order.index(theirs) <= 1 and [r for r in order if r != theirs] == mine


def test_a_processors_default_priority_applies_unless_the_run_says(client, broker):
    digest = submit(client, "notify", {"text": "weekly digest"}, priority="low")
    told = submit(client, "notify", {"text": "lunch"}, priority="normal")
    alert = submit(client, "notify", {"text": "disk full"})  # notify's own: high
    assert [get(client, r)["priority"] for r in (digest, told, alert)] == ["low", "normal", "high"]
    assert taken_in_order(broker, 3, ("notify",)) == [alert, told, digest]


@pytest.mark.parametrize("priority", ["urgent", 1, ""])
def test_an_unknown_priority_is_refused_naming_the_field(client, broker, priority):
    r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo", "priority": priority}, headers=HEADERS)
    assert r.status_code == 422 and "priority" in r.json["error"]["message"]
    assert broker.redis.zcard(keys.tenant_runs(0, default_tenant(broker))) == 0


# -- run_at --------------------------------------------------------------------------


def test_a_run_made_for_later_waits_queued_saying_when_and_starts_after(client, broker, drain):
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    run_id = submit(client, run_at=rfc3339(due))
    run = get(client, run_id)
    assert run["status"] == "queued" and run["next_attempt_at"] is not None
    assert abs(datetime.fromisoformat(run["next_attempt_at"]) - due) < timedelta(milliseconds=2)
    assert taken_in_order(broker, 1) == []  # not before its time
    drain()
    run = get(client, run_id)
    assert run["status"] == "completed" and run["attempts"] == 1
    assert datetime.fromisoformat(run["started_at"]) >= due - timedelta(milliseconds=1)


def test_a_run_at_in_the_past_runs_now(client, broker):
    run_id = submit(client, run_at=rfc3339(datetime.now(UTC) - timedelta(hours=1)))
    assert get(client, run_id)["next_attempt_at"] is None
    assert taken_in_order(broker, 1) == [run_id]


@pytest.mark.parametrize(
    "run_at",
    ["tomorrow", "2026-13-01T00:00:00Z", "2026-12-01T10:00:00", 1767225600, "9999-01-01T00:00:00Z"],
)
def test_a_malformed_or_absurd_run_at_is_refused_naming_it(client, broker, run_at):
    r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo", "run_at": run_at}, headers=HEADERS)
    assert r.status_code == 422 and "run_at" in r.json["error"]["message"], r.json
    assert broker.redis.zcard(keys.delayed(0)) == 0 and broker.redis.hlen(keys.depth(0)) == 0


def test_a_run_waiting_for_its_time_can_be_cancelled_and_never_runs(client, broker, drain):
    run_id = submit(client, run_at=rfc3339(datetime.now(UTC) + timedelta(seconds=1)))
    r = client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert broker.redis.zscore(keys.delayed(0), run_id) is None
    time.sleep(1.2)
    drain()
    assert get(client, run_id)["status"] == "cancelled" and get(client, run_id)["attempts"] == 0


def test_a_group_add_takes_run_at_per_input(client, broker):
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    later = rfc3339(datetime.now(UTC) + timedelta(minutes=5))
    inputs = [{"input": {"i": 0}, "processor": "echo", "run_at": later}, {"input": {"i": 1}, "processor": "echo"}]
    r = client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=HEADERS)
    assert r.status_code == 200, r.json
    waiting, now = r.json["run_ids"]
    assert get(client, waiting)["next_attempt_at"] is not None and get(client, now)["next_attempt_at"] is None
    assert taken_in_order(broker, 2) == [now]
    # one bad run_at refuses the whole add, naming the input
    bad = [{"input": {}, "processor": "echo"}, {"input": {}, "processor": "echo", "run_at": "soon"}]
    r = client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": bad}, headers=HEADERS)
    assert r.status_code == 422 and "inputs.1.run_at" in r.json["error"]["message"]


def test_put_takes_run_at_and_delay_s(broker):
    echo = load_apps(broker.settings.app)["echo"]
    now_ms = broker.now_ms()
    delayed = echo.put({}, delay_s=30, broker=broker)
    at = echo.put({}, run_at=datetime.now(UTC) + timedelta(minutes=2), broker=broker, priority="high")
    due = {h.run_id: int(broker.redis.hget(keys.run(h.run_id), "next_attempt_ms")) for h in (delayed, at)}
    assert 29_000 <= due[delayed.run_id] - now_ms <= 31_000
    assert 119_000 <= due[at.run_id] - now_ms <= 121_000
    assert broker.redis.hget(keys.run(at.run_id), "priority_band") == "0"
    with pytest.raises(ValueError, match="run_at or delay_s"):
        echo.put({}, delay_s=1, run_at=datetime.now(UTC), broker=broker)


def test_a_run_due_after_several_leases_runs_exactly_once(client, broker, worker):
    # Celery on Redis runs a task twice when its delay passes the visibility timeout;
    # here the due set is apart from leases (lease 1 s in these tests).
    worker()
    run_id = submit(client, "sleep", {"seconds": 0.5}, run_at=rfc3339(datetime.now(UTC) + timedelta(seconds=3)))
    wait_until(lambda: get(client, run_id)["status"] == "completed", timeout_s=30)
    time.sleep(1.5)  # two more leases: nothing runs it again
    run = get(client, run_id)
    states = [f["status"] for _, f in events.run_entries(broker, run_id) if f["type"] == "task_run.state"]
    assert run["attempts"] == 1 and states == ["queued", "running", "completed"]


# -- schedules ---------------------------------------------------------------------


def every(seconds: float, name: str = "poll") -> Processor:
    """A scheduled processor, not registered with the app (so no other test sees it)."""
    return Processor(name=name, func=lambda inp: inp, schedule=Schedule.parse(name, seconds, None, {"feed": "x"}))


def scheduled_runs(broker, processor):  # type: ignore[no-untyped-def]
    ids = broker.redis.zrange(keys.tenant_runs(0, default_tenant(broker)), 0, -1)
    return [r for r in load_runs(broker.redis, ids) if r is not None and r.processor == processor]


def test_a_missed_stretch_of_ticks_is_caught_up_with_one_run_for_the_latest(broker):
    proc = every(1.0)
    advertise(broker.redis, [proc], broker.settings)
    scheduler = Scheduler(broker, [proc])
    scheduler.tend(proc.schedule)  # new: its first tick is the next one, no run now
    assert scheduled_runs(broker, "poll") == []
    # Given the next tick came 3 ticks ago (every worker was down since)
    latest = broker.now_ms() // 1000 * 1000
    broker.redis.hset(keys.schedule(0, "poll"), "next", latest - 3000)
    scheduler.tend(proc.schedule)
    scheduler.tend(proc.schedule)  # again at once: nothing more
    (run,) = scheduled_runs(broker, "poll")
    tick = int(datetime.fromisoformat(run.metadata["taskq_schedule_tick"]).timestamp() * 1000)
    assert tick >= latest  # the latest tick (a second may have passed meanwhile)
    assert run.metadata["taskq_schedule_ticks"] == (tick - (latest - 3000)) // 1000 + 1 >= 4
    assert run.input == {"feed": "x"} and run.tenant == default_tenant(broker)
    assert int(broker.redis.hget(keys.schedule(0, "poll"), "next")) == tick + 1000


def test_schedulers_racing_for_one_tick_make_one_run(broker):
    proc = every(1.0)
    advertise(broker.redis, [proc], broker.settings)
    schedulers = [Scheduler(broker, [proc]) for _ in range(8)]
    schedulers[0].tend(proc.schedule)
    broker.redis.hset(keys.schedule(0, "poll"), "next", broker.now_ms() // 1000 * 1000)
    start = threading.Barrier(len(schedulers))

    def fire(s: Scheduler) -> None:
        start.wait()
        s.tend(proc.schedule)

    threads = [threading.Thread(target=fire, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(scheduled_runs(broker, "poll")) == 1


def test_a_changed_schedule_starts_afresh_without_catching_up(broker):
    proc = every(1.0)
    advertise(broker.redis, [proc], broker.settings)
    Scheduler(broker, [proc]).tend(proc.schedule)
    broker.redis.hset(keys.schedule(0, "poll"), "next", broker.now_ms() - 10_000)
    changed = every(60.0)  # a deploy changed it to every minute
    Scheduler(broker, [changed]).tend(changed.schedule)
    assert scheduled_runs(broker, "poll") == []
    assert int(broker.redis.hget(keys.schedule(0, "poll"), "next")) > broker.now_ms()


def test_schedules_are_listed_with_their_last_and_next_tick(client, broker):
    proc = every(1.0)
    advertise(broker.redis, [proc], broker.settings)
    scheduler = Scheduler(broker, [proc])
    scheduler.tend(proc.schedule)
    broker.redis.hset(keys.schedule(0, "poll"), "next", broker.now_ms() // 1000 * 1000)
    scheduler.tend(proc.schedule)
    shown = CliRunner().invoke(main, ["info", "--json"], env=settings_env(broker.settings), catch_exceptions=False)
    (poll,) = [s for s in json.loads(shown.stdout)["schedules"] if s["processor"] == "poll"]
    assert poll["schedule"] == "every 1 s" and poll["next_tick_ms"] - poll["last_tick_ms"] == 1000
    assert "every 1 s" in CliRunner().invoke(main, ["info"], env=settings_env(broker.settings)).stdout
    assert client.post("/dashboard/login", data={"api_key": API_KEY}).status_code == 302
    page = client.get("/dashboard").data.decode()
    assert "<td>poll</td><td>every 1 s</td>" in page


@pytest.mark.parametrize(
    ("schedule", "tz", "message"),
    [
        ("0 3 * *", None, "not a five-field cron expression"),
        ("61 * * * *", None, "not a five-field cron expression"),
        ("@daily", None, "not a five-field cron expression"),
        (0.01, None, "use at least 0.1 s"),
        (True, None, "a cron string or a number of seconds"),
        ("0 3 * * *", "Mars/Olympus", "is not a time zone"),
    ],
)
def test_a_bad_schedule_fails_at_once_naming_the_processor(schedule, tz, message):
    with pytest.raises(ConfigurationError) as raised:
        Schedule.parse("nightly", schedule, tz)
    assert str(raised.value).startswith("nightly: ") and message in str(raised.value)


def test_cron_ticks_follow_the_processors_time_zone():
    paris = Schedule.parse("report", "0 9 * * 1", "Europe/Paris")  # Mondays 09:00 in Paris
    after = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)  # a Tuesday
    tick = paris.next_after(after)
    assert datetime.fromtimestamp(tick / 1000, UTC) == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # CET = UTC+1
    assert paris.latest_at_or_before(tick) == tick and paris.latest_at_or_before(tick - 1) < tick
    assert paris.ticks_between(tick, paris.next_after(tick)) == 2


# -- schedules with real workers -------------------------------------------------------


def ticks_of(broker) -> list[int]:  # type: ignore[no-untyped-def]
    runs = scheduled_runs(broker, "tick")
    return sorted(int(datetime.fromisoformat(r.metadata["taskq_schedule_tick"]).timestamp() * 1000) for r in runs)


def test_two_workers_serving_a_schedule_make_one_run_per_tick(broker, worker):
    app = broker.settings.replace(app=("workers.app", "tests.apps.scheduled"), schedules=True)
    worker(settings=app, name="w1")
    worker(settings=app, name="w2")
    wait_until(lambda: len(ticks_of(broker)) >= 4, timeout_s=30)
    ticks = ticks_of(broker)
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [1000] * (
        len(ticks) - 1
    )  # none twice, none missed
    runs = scheduled_runs(broker, "tick")
    assert all(r.metadata["taskq_schedule_ticks"] == 1 and r.input == {"from": "schedule"} for r in runs)
    wait_until(lambda: all(r.status.value == "completed" for r in scheduled_runs(broker, "tick")[:4]), timeout_s=30)


def test_a_worker_killed_between_ticks_loses_none_and_the_gap_is_caught_up_once(broker, worker):
    app = broker.settings.replace(app=("workers.app", "tests.apps.scheduled"), schedules=True)
    first = worker(settings=app, name="first")
    wait_until(lambda: len(ticks_of(broker)) >= 2, timeout_s=30)
    first.kill()
    before = ticks_of(broker)
    time.sleep(2.5)  # two or three ticks fall while no worker is up
    worker(settings=app, name="second")
    wait_until(lambda: len(ticks_of(broker)) >= len(before) + 2, timeout_s=30)
    ticks = ticks_of(broker)
    assert ticks[: len(before)] == before and len(set(ticks)) == len(ticks)
    by_tick = {
        int(datetime.fromisoformat(r.metadata["taskq_schedule_tick"]).timestamp() * 1000): r
        for r in scheduled_runs(broker, "tick")
    }
    catch_up = by_tick[ticks[len(before)]]
    assert catch_up.metadata["taskq_schedule_ticks"] >= 2  # one run stood for the missed ticks
    assert ticks[len(before)] - before[-1] == 1000 * catch_up.metadata["taskq_schedule_ticks"]
    # every tick run ends, the one the killed worker held included (its lease ran out)
    wait_until(
        lambda: all(r.status.value == "completed" for r in scheduled_runs(broker, "tick")[: len(before) + 1]),
        timeout_s=30,
    )


def test_runs_made_together_are_taken_in_the_order_they_were_made(client, broker):
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    inputs = [{"input": {"i": i}, "processor": "echo"} for i in range(200)]
    made = client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=HEADERS).json["run_ids"]
    assert len({broker.redis.hget(keys.run(r), "created_ms") for r in made}) == 1  # one step, one ms
    assert taken_in_order(broker, 200) == made
