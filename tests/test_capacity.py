"""A full Redis is a clear error, not chaos: past TASKQ_MEMORY_HIGH_WATER of
maxmemory new runs get a 503 saying why, with Retry-After, and nothing of them is
written; the runs already accepted still finish (status, result, webhook). A write
Redis itself refuses (OOM) is a 503 too, never a 500. All on a dedicated
redis-server from the project's redis.conf whose maxmemory the tests set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from taskq import client as taskq_client
from taskq import errors, ids, keys
from taskq.broker import Broker
from taskq.cli import main
from taskq.engine.scheduler import Scheduler
from taskq.gateway import create_app
from taskq.processor import advertise
from taskq.settings import Settings
from tests.conftest import HEADERS, RedisServer, fast_settings, settings_env, wait_until
from tests.test_dashboard import signed_in
from tests.test_scheduling import every, scheduled_runs
from tests.test_webhooks import state_of

KIB = 1024
PAYLOAD = "x" * KIB  # a 1 KB input, echoed back as a 1 KB output
HIGH_WATER = 0.9
PROXY = "up=http://127.0.0.1:9"  # never called: the run is refused before a worker sees it


@pytest.fixture(scope="module")
def small_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of these tests' own: its maxmemory is theirs to change."""
    server = RedisServer(tmp_path_factory.mktemp("small-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(small_redis: RedisServer) -> Settings:
    # memory_check_s=0: every create reads INFO, so the first run past the mark is refused.
    return fast_settings(small_redis.url, memory_check_s=0.0, proxy_upstreams=(PROXY,))


@pytest.fixture
def maxmemory(broker: Broker) -> Iterator[Callable[[int], None]]:
    """Sets maxmemory for the test, and unsets it after."""
    yield lambda n: broker.redis.config_set("maxmemory", n)
    broker.redis.config_set("maxmemory", 0)


def used_bytes(broker: Broker) -> int:
    return int(broker.redis.info("memory")["used_memory"])


def fill_to_just_under_the_mark(broker: Broker, maxmemory: Callable[[int], None], room: int = 150 * KIB) -> None:
    """Ballast (not runs, so that few runs need to finish after), then a maxmemory
    that puts the high-water mark `room` above what is used now; what lies between the
    mark and maxmemory is what the accepted runs have to finish in."""
    broker.redis.set("ballast", "b" * (2 << 20))
    maxmemory(int((used_bytes(broker) + room) / HIGH_WATER))


def post_run(client, **extra: Any):  # type: ignore[no-untyped-def]
    body = {"input": {"text": PAYLOAD}, "processor": "echo", **extra}
    return client.post("/v1/tasks/runs", json=body, headers=HEADERS)


def run_keys(broker: Broker, like: str) -> set[str]:
    """The run records in Redis (`like`: any run id, for the key's shape)."""
    pattern = keys.run(like).replace(like, "*")
    head, _, tail = pattern.partition("*")
    found = broker.redis.scan_iter(match=pattern)
    return {k for k in found if ids.RUN_ID.fullmatch(k.removeprefix(head).removesuffix(tail))}


def assert_refused_for_memory(r: Any) -> None:
    assert r.status_code == 503, r.json
    assert r.json["type"] == "error"
    error = r.json["error"]
    assert error["message"].startswith("Redis memory at ") and "of maxmemory" in error["message"]
    assert "high-water mark of 90%" in error["message"] and "runs already accepted can finish" in error["message"]
    assert error["detail"]["reason"] == "redis_memory_high" and error["detail"]["high_water"] == HIGH_WATER
    assert error["detail"]["memory_used_fraction"] >= HIGH_WATER
    assert r.headers["Retry-After"] == "30"


@pytest.mark.slow  # (fills a Redis run by run)
def test_new_runs_past_the_high_water_mark_get_a_503_and_accepted_runs_still_finish(
    client, broker, maxmemory, drain, deliver, receiver
):
    # Given a run accepted while there was room, with a webhook
    first = post_run(client, webhook={"url": receiver.url("/hook")})
    assert first.status_code == 202, first.json
    group_id = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    fill_to_just_under_the_mark(broker, maxmemory)

    # When runs are made until Redis's memory passes the mark
    accepted = [first.json["run_id"]]
    for _ in range(10_000):
        r = post_run(client)
        if r.status_code != 202:
            break
        accepted.append(r.json["run_id"])

    # Then the next one is a 503 saying why, with Retry-After, and nothing of it is written
    assert_refused_for_memory(r)
    assert len(accepted) > 2
    assert len(run_keys(broker, accepted[0])) == len(accepted)
    assert int(broker.redis.hget(keys.depth(0), "default") or 0) == len(accepted)
    # and so is a group add (all or nothing: the group gets none), the async proxy and put()
    add = client.post(
        f"/v1/tasks/groups/{group_id}/runs",
        json={"inputs": [{"input": {"text": PAYLOAD}, "processor": "echo"}] * 3},
        headers=HEADERS,
    )
    assert_refused_for_memory(add)
    group = client.get(f"/v1/tasks/groups/{group_id}", headers=HEADERS).json
    assert group["status"]["num_task_runs"] == 0 and broker.redis.llen(keys.group_runs(group_id)) == 0
    assert_refused_for_memory(client.post("/v1/async/up/predict", data="{}", headers=HEADERS))
    with pytest.raises(errors.RedisFull, match="high-water mark"):
        taskq_client.put("echo", {"text": PAYLOAD}, broker=broker)
    assert len(run_keys(broker, accepted[0])) == len(accepted)

    # And every run accepted before still finishes, results and webhook included
    drain()
    # (their event streams, folded into their records as they ended, go 5 s later: until
    # then Redis holds both; EXISTS also reaps a stream past its expiry)
    streams = [keys.run_events(run_id) for run_id in accepted]
    wait_until(lambda: not broker.redis.exists(*streams), timeout_s=20)
    for run_id in accepted:
        shown = client.get(f"/v1/tasks/runs/{run_id}/result?timeout=0", headers=HEADERS)
        assert shown.status_code == 200 and shown.json["output"]["content"] == {"text": PAYLOAD}
    deliver(until=lambda: state_of(client, accepted[0]) == "delivered")
    assert len(receiver.at("/hook")) == 1
    assert used_bytes(broker) < int(broker.redis.config_get("maxmemory")["maxmemory"])


@pytest.fixture
def unchecked(broker: Broker) -> Iterator[Any]:
    """A gateway with taskq's own check off (TASKQ_MEMORY_HIGH_WATER=0)."""
    app = create_app(broker.settings.replace(memory_high_water=0.0))
    yield app.test_client()
    app.extensions["taskq"].close()


def test_a_write_redis_itself_refuses_for_memory_is_a_503_not_a_500(unchecked, broker, maxmemory):
    # Given taskq's own check off, and a Redis past its maxmemory
    client = unchecked
    made = post_run(client)
    assert made.status_code == 202
    group_id = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    before = run_keys(broker, made.json["run_id"])
    assert len(before) == 1
    maxmemory(used_bytes(broker) // 2)

    # When runs, groups and group adds are asked for, each is a 503 saying Redis is out of memory
    one_group = {"inputs": [{"input": {}, "processor": "echo"}]}
    for r in (
        post_run(client),
        client.post("/v1/tasks/groups", json={}, headers=HEADERS),
        client.post(f"/v1/tasks/groups/{group_id}/runs", json=one_group, headers=HEADERS),
    ):
        assert r.status_code == 503, r.json
        assert r.json["error"]["message"].startswith("Redis is out of memory (maxmemory reached)")
        assert r.json["error"]["detail"] == {"reason": "redis_oom"}
        assert r.headers["Retry-After"] == "30"
    # Then nothing was written, and reads still answer, `taskq info` too
    assert run_keys(broker, made.json["run_id"]) == before
    assert client.get(f"/v1/tasks/runs/{made.json['run_id']}", headers=HEADERS).status_code == 200
    shown = CliRunner().invoke(main, ["info"], env=settings_env(broker.settings))
    assert shown.exit_code == 0, shown.output
    assert "past the high-water mark of 90%: new runs are being refused" in shown.stdout


def test_the_check_reads_redis_memory_once_per_interval_not_once_per_request(broker, maxmemory, settings):
    # Given a process that trusts its reading for an hour, and a Redis past the mark
    cached = Broker(settings.replace(memory_check_s=3600.0))
    try:
        taskq_client.put("echo", {}, broker=cached)  # its one reading: room
        maxmemory(int(used_bytes(broker) / 0.95))
        calls = _info_calls(broker)
        # When it makes more runs
        for _ in range(20):
            taskq_client.put("echo", {}, broker=cached)
        # Then it asked Redis for its memory no more (only this count's own INFO counts)
        assert _info_calls(broker) == calls + 1
        # while a process reading afresh is refused
        with pytest.raises(errors.RedisFull):
            taskq_client.put("echo", {}, broker=broker)
    finally:
        cached.close()


def _info_calls(broker: Broker) -> int:
    return int(broker.redis.info("commandstats")["cmdstat_info"]["calls"])


def test_headroom_is_shown_in_metrics_info_and_the_dashboard(client, broker, maxmemory):
    # Given no maxmemory: said so everywhere
    env = settings_env(broker.settings)
    shown = CliRunner().invoke(main, ["info"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "maxmemory not set: no high-water check" in shown.stdout
    assert _metric(client, "taskq_redis_memory_max_bytes") == 0

    # When maxmemory is set
    maxmemory(64 << 20)
    used = used_bytes(broker)

    # Then /metrics has used and max bytes and the mark, `taskq info` and the dashboard the headroom
    assert _metric(client, "taskq_redis_memory_max_bytes") == 64 << 20
    assert 0 < _metric(client, "taskq_redis_memory_used_bytes") < 2 * used
    assert _metric(client, "taskq_redis_memory_high_water_ratio") == HIGH_WATER
    line = "of 64.0 MiB"
    table = CliRunner().invoke(main, ["info"], env=env).stdout
    assert line in table and "new runs are refused from 90% (TASKQ_MEMORY_HIGH_WATER)" in table
    as_json = CliRunner().invoke(main, ["info", "--json"], env=env).stdout
    assert '"max_bytes": 67108864' in as_json and '"memory_high_water": 0.9' in as_json
    signed_in(client)
    page = client.get("/dashboard").data.decode()
    assert line in page and "new runs are refused from 90%" in page


def _metric(client, name: str) -> float:  # type: ignore[no-untyped-def]
    text = client.get("/metrics").data.decode()
    (value,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    return float(value)


def test_a_schedule_tick_waits_past_the_mark_and_fires_once_there_is_room(broker, maxmemory):
    proc = every(1.0)
    advertise(broker.redis, [proc], broker.settings)
    scheduler = Scheduler(broker, [proc])
    scheduler.tend(proc.schedule)  # new: its first tick is the next one
    # Given its tick is due, and Redis past the mark
    due = broker.now_ms() - 1000
    broker.redis.hset(keys.schedule(0, "poll"), "next", due)
    maxmemory(int(used_bytes(broker) / 0.95))
    # When the scheduler tends it, the tick is refused and stays due (the loop logs it as an outage)
    with pytest.raises(errors.RedisFull):
        scheduler.tend(proc.schedule)
    assert scheduled_runs(broker, "poll") == []
    assert int(broker.redis.hget(keys.schedule(0, "poll"), "next")) == due
    # Then once there is room it fires, one run
    maxmemory(0)
    scheduler.tend(proc.schedule)
    assert len(scheduled_runs(broker, "poll")) == 1


def test_a_redis_that_refuses_info_gets_no_check_not_failed_creates(broker, maxmemory, settings):
    # Given a Redis past the high-water mark (but with room), read by a user whose ACL refuses INFO (as some managed Redis do)
    broker.redis.acl_setuser("noinfo", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                             commands=["+@all", "-info"])  # fmt: skip
    url = settings.redis_url.replace("redis://", "redis://noinfo:pw@", 1)
    limited = Broker(settings.replace(redis_url=url, memory_high_water=0.5))
    try:
        maxmemory(int(used_bytes(broker) / 0.7))  # past the mark, with room for the run
        # When it makes a run
        made = taskq_client.put("echo", {}, broker=limited)
        # Then the run is made (no check can be made), not refused and not a 500
        assert broker.redis.exists(keys.run(made.run_id))
    finally:
        limited.close()
        broker.redis.acl_deluser("noinfo")
