"""taskq on a real Redis Cluster that the suite starts itself (three masters with a
replica each, tests/conftest.py ClusterServers): REDIS_URL names one node and
nothing else is set. Runs, groups and their streams, webhooks, listing, a killed
worker, and a master failover in the middle of a load."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis as redis_lib
from click.testing import CliRunner

from taskq import errors, history, keys, run
from taskq.broker import Broker
from taskq.catalog import Catalog
from taskq.cli import main
from taskq.engine.maintenance import Maintenance
from taskq.gateway import create_app
from taskq.ids import partition_of
from taskq.jsontext import parse
from taskq.models import RunInput
from taskq.processor import advertise, load_apps
from tests.conftest import HEADERS, fast_settings, settings_env, wait_until
from tests.test_flow_control import held, most_at_once
from tests.test_groups import sse_events

pytestmark = pytest.mark.processes


@pytest.fixture
def cbroker(redis_cluster):  # type: ignore[no-untyped-def]
    redis_cluster.flush()
    b = Broker(fast_settings(redis_cluster.url))
    assert b.cluster and b.partitions == 16 and b.rq_mirror == ""
    advertise(b.redis, load_apps(b.settings.app).values(), b.settings)
    yield b
    b.close()


@pytest.fixture
def cclient(cbroker):  # type: ignore[no-untyped-def]
    app = create_app(cbroker.settings)
    yield app.test_client()
    app.extensions["taskq"].close()


def start(spawn, broker, command, name, *args, settings=None):  # type: ignore[no-untyped-def]
    proc = spawn(command, *args, settings=settings or broker.settings)
    if command == "worker":
        wait_until(lambda: broker.redis.zscore(keys.WORKERS, name) is not None or proc.proc.poll() is not None)
        assert proc.proc.poll() is None, proc.output()
    return proc


def submit(client, processor="echo", input=None, headers=HEADERS, **fields):  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input or {}, "processor": processor, **fields}, headers=headers)
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def status(client, run_id):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json


def masters_holding(cluster, run_ids) -> set[int]:  # type: ignore[no-untyped-def]
    """The master ports whose keyspace has any of these runs."""
    out = set()
    for port in cluster.masters():
        node = redis_lib.Redis(port=port, decode_responses=True)
        try:
            for run_id in run_ids:
                try:
                    if node.exists(keys.run(run_id)):
                        out.add(port)
                        break
                except redis_lib.ResponseError:  # MOVED: not this master's slot
                    continue
        finally:
            node.close()
    return out


def test_runs_groups_streams_webhooks_and_listing_work_on_a_cluster(cclient, cbroker, redis_cluster, spawn, receiver):  # type: ignore[no-untyped-def]
    hook = {"url": receiver.url("/hook"), "event_types": ["task_run.status"]}
    singles = [submit(cclient, input={"i": i}, webhook=hook) for i in range(30)]
    gid = cclient.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    added = cclient.post(
        f"/v1/tasks/groups/{gid}/runs", json={"inputs": [{"input": {"g": i}, "processor": "echo"} for i in range(40)]},
        headers=HEADERS,
    )  # fmt: skip
    assert added.status_code == 200, added.json
    grouped = added.json["run_ids"]
    # The data spreads over every master
    assert masters_holding(redis_cluster, singles) == set(redis_cluster.masters())
    # (the chart's first snapshots, taken before any run ran, for a past minute)
    for partition in range(cbroker.partitions):
        Maintenance(cbroker).tend(partition, cbroker.now_ms() // history.MINUTE_MS - 2)
    start(spawn, cbroker, "worker", "cw", "--name", "cw")
    start(spawn, cbroker, "dispatcher", "cd")
    wait_until(lambda: all(status(cclient, r)["status"] == "completed" for r in singles + grouped), timeout_s=60)
    # the group: exact counts, its runs stream and its events stream
    g = cclient.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json
    assert g["status"]["task_run_status_counts"] == {"completed": 40} and not g["status"]["is_active"]
    runs = sse_events(cclient.get(f"/v1/tasks/groups/{gid}/runs", headers=HEADERS).data.decode())
    assert sorted(e["run"]["run_id"] for e in runs if e.get("type") == "task_run.state") == sorted(grouped)
    events = sse_events(cclient.get(f"/v1/tasks/groups/{gid}/events?timeout=2", headers=HEADERS).data.decode())
    assert any(e.get("type") == "task_group_status" for e in events)
    # a run's own stream
    states = sse_events(cclient.get(f"/v1/tasks/runs/{singles[0]}/events", headers=HEADERS).data.decode())
    assert [e["run"]["status"] for e in states if e["type"] == "task_run.state"] == ["queued", "running", "completed"]
    # webhooks: one per single run
    wait_until(lambda: len(receiver.at("/hook")) == 30, timeout_s=30)
    assert {json.loads(r.body)["data"]["run_id"] for r in receiver.at("/hook")} == set(singles)
    # listing merges the partitions: every run once, newest first, across pages
    seen, cursor = [], None
    while True:
        page = cclient.get(f"/v1/tasks/runs?limit=25{'&cursor=' + cursor if cursor else ''}", headers=HEADERS).json
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(singles + grouped) and seen == sorted(seen, reverse=True)
    # taskq info reads the cluster
    shown = CliRunner().invoke(main, ["info", "--json"], env=settings_env(cbroker.settings), catch_exceptions=False)
    view = json.loads(shown.stdout)
    assert [w["name"] for w in view["workers"]] == ["cw"] and view["running"] == 0
    assert (view["cluster"], view["masters"], view["partitions"]) == (True, 3, 16)
    assert "a cluster of 3 masters, 16 partitions" in " ".join(shown.stderr.split())
    # the dashboard's chart: every partition's snapshots and live totals, summed
    minutes = history.last_hour(cbroker)
    assert sum(m.finished for m in minutes) == 70 and sum(sum(m.waits.values()) for m in minutes) == 70


def test_a_killed_worker_runs_are_retried_on_a_cluster(cclient, cbroker, spawn):  # type: ignore[no-untyped-def]
    first = start(spawn, cbroker, "worker", "first", "--name", "first", "--concurrency", "4")
    run_ids = [submit(cclient, "sleep", {"seconds": 2}) for _ in range(4)]
    wait_until(lambda: all(status(cclient, r)["status"] == "running" for r in run_ids), timeout_s=30)
    first.kill()
    start(spawn, cbroker, "worker", "second", "--name", "second", "--concurrency", "4")
    wait_until(lambda: all(status(cclient, r)["status"] == "completed" for r in run_ids), timeout_s=60)
    for run_id in run_ids:
        run = status(cclient, run_id)
        assert run["attempts"] == 2 and run["errors"][0]["message"] == "worker lost"


def test_a_master_failover_mid_load_loses_no_run_that_was_acknowledged(cclient, cbroker, redis_cluster, spawn):  # type: ignore[no-untyped-def]
    # With TASKQ_WAIT_REPLICAS=1 a run is acknowledged (202) only once a replica has it.
    durable = cbroker.settings.replace(wait_replicas=1, wait_replicas_timeout_ms=500)
    app = create_app(durable)
    client = app.test_client()
    start(spawn, cbroker, "worker", "fw", "--name", "fw", "--concurrency", "16")
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            key = uuid.uuid4().hex
            for _ in range(200):  # retried with the same key until acknowledged
                r = client.post(
                    "/v1/tasks/runs",
                    json={"input": {}, "processor": "echo"},
                    headers={**HEADERS, "Idempotency-Key": key},
                )
                if r.status_code == 202:
                    accepted.append(r.json["run_id"])
                    break
                refused.append(r.status_code)
                time.sleep(0.1)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_until(lambda: len(accepted) >= 30, timeout_s=30)
        victim = redis_cluster.masters()[0]
        redis_cluster.kill(victim)  # SIGKILL: its replica takes over after the node timeout
        wait_until(redis_cluster.healthy, timeout_s=30)
        after = len(accepted)
        wait_until(lambda: len(accepted) >= after + 30, timeout_s=60)
    finally:
        stop.set()
        loader.join(60)
    try:
        assert refused and set(refused) == {503}  # while the master was away: 503 (retried), never a 500
        wait_until(lambda: all(status(cclient, r)["status"] == "completed" for r in accepted), timeout_s=90)
        assert len(set(accepted)) == len(accepted)  # a retried request made one run
    finally:
        app.extensions["taskq"].close()
        redis_cluster.start_node(victim)  # back, as a replica of its replacement
        wait_until(lambda: redis_cluster.healthy() and _replicas(redis_cluster) == 3, timeout_s=30)


def _replicas(cluster) -> int:  # type: ignore[no-untyped-def]
    count = 0
    for port in cluster.masters():
        node = redis_lib.Redis(port=port, decode_responses=True)
        try:
            count += int(node.info("replication")["connected_slaves"])
        finally:
            node.close()
    return count


def test_a_shared_limit_holds_across_workers_on_a_cluster(cclient, cbroker, spawn):  # type: ignore[no-untyped-def]
    # Every run that needs a named Limit lives in one partition (lanes.NAMED_HOME): one budget, one hash
    run_ids = [submit(cclient, "summarize" if i % 2 else "translate", {"seconds": 0.1}) for i in range(16)]
    assert len({partition_of(r) for r in run_ids}) == 1
    start(spawn, cbroker, "worker", "l1", "--name", "l1", "--concurrency", "4")
    start(spawn, cbroker, "worker", "l2", "--name", "l2", "--concurrency", "4")
    wait_until(lambda: all(status(cclient, r)["status"] == "completed" for r in run_ids), timeout_s=60)
    assert most_at_once([iv for r in run_ids for iv in held(cbroker, r)]) == 2


def test_a_master_past_its_memory_mark_refuses_only_the_runs_that_would_land_on_it(cbroker, redis_cluster):  # type: ignore[no-untyped-def]
    # Given one master (of three) past 90% of its maxmemory, read afresh on every create
    broker = Broker(cbroker.settings.replace(memory_check_s=0.0))
    full = redis_cluster.masters()[0]
    node = redis_lib.Redis(port=full, decode_responses=True)
    node.config_set("maxmemory", int(int(node.info("memory")["used_memory"]) / 0.95))
    try:
        # When a run is made in every partition
        refused = set()
        for partition in range(broker.partitions):
            new = run.prepare(
                broker, Catalog(broker), "t", parse(RunInput, {"processor": "echo", "input": {}}), partition=partition
            )
            try:
                run.create(broker, [new], tenant="t")
            except errors.RedisFull:
                refused.add(partition)
        # Then exactly the partitions that master holds are refused, and the others made
        on_full = {p for p in range(broker.partitions) if broker.redis.get_node_from_key(keys.prefix(p)).port == full}
        assert on_full and refused == on_full
        # and `taskq info` lists every master's memory
        shown = CliRunner().invoke(main, ["info", "--json"], env=settings_env(broker.settings))
        assert shown.exit_code == 0, shown.output
        assert sorted(m["node"].rsplit(":", 1)[1] for m in json.loads(shown.stdout)["memory"]) == sorted(
            str(p) for p in redis_cluster.masters()
        )
    finally:
        node.config_set("maxmemory", 0)
        node.close()
        broker.close()


def test_a_run_and_a_whole_group_cancel_on_a_cluster(cclient, cbroker):  # type: ignore[no-untyped-def]
    # Given runs no worker takes: one alone, and a group of 250 (more than one cancel batch)
    single = submit(cclient)
    gid = cclient.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    for start_at in (0, 125):
        inputs = [{"input": {"g": i}, "processor": "echo"} for i in range(start_at, start_at + 125)]
        added = cclient.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=HEADERS)
        assert added.status_code == 200, added.json
    # When the run and the group are cancelled
    r = cclient.post(f"/v1/tasks/runs/{single}/cancel", headers=HEADERS)
    assert r.status_code == 200, r.json
    g = cclient.post(f"/v1/tasks/groups/{gid}/cancel", headers=HEADERS)
    # Then both are cancelled, every run of the group once
    assert g.status_code == 200, g.json
    assert status(cclient, single)["status"] == "cancelled"
    group = cclient.get(f"/v1/tasks/groups/{gid}", headers=HEADERS).json
    assert group["status"]["task_run_status_counts"] == {"cancelled": 250}, group
