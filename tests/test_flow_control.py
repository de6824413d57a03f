"""Flow control with real workers: lanes take turns between tenants and keys, and
limits hold across every worker (docs/flow-control.md).

The proof is in Redis's own clock: each attempt of a run holds its limits from its
`running` state event to the next state event (the claim and the finish, reap or
shutdown that ends it, each one atomic step), so overlaps counted over those
intervals are exactly the units a limit had out at once."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from taskq import events, keys
from taskq.cli import main
from taskq.engine.claims import Claimer
from taskq.limits import Budget, Declared, Limit, LimitDeclarationError, Rate, check_path
from taskq.processor import Processor, load_apps, task
from tests.conftest import API_KEY, HEADERS, OTHER_KEY, settings_env, wait_until

Interval = tuple[int, int]


def submit(client, processor, input, key=API_KEY, **fields):  # type: ignore[no-untyped-def]
    body = {"input": input, "processor": processor, **fields}
    r = client.post("/v1/tasks/runs", json=body, headers={"x-api-key": key})
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def get(client, run_id, key=API_KEY):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/tasks/runs/{run_id}", headers={"x-api-key": key}).json


def finished(client, run_ids, key=API_KEY, timeout_s=60):  # type: ignore[no-untyped-def]
    """Waits until every run has ended; returns their TaskRuns."""
    wait_until(lambda: all(get(client, r, key)["status"] in ("completed", "failed") for r in run_ids), timeout_s)
    return [get(client, r, key) for r in run_ids]


def held(broker, run_id) -> list[Interval]:  # type: ignore[no-untyped-def]
    """Each attempt's interval (Redis ms): from its `running` event to the next state event."""
    out: list[Interval] = []
    start = None
    for event_id, fields in events.run_entries(broker, run_id):
        if fields.get("type") != "task_run.state":
            continue
        at = int(event_id.split("-")[0])
        if start is not None:
            out.append((start, at))
            start = None
        if fields["status"] == "running":
            start = at
    assert start is None, f"{run_id} is still running"
    return out


def most_at_once(intervals: list[Interval]) -> int:
    """The most intervals open at one moment (one that ends as another starts: not both)."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def starts(broker, run_ids) -> list[int]:  # type: ignore[no-untyped-def]
    """When each run's (only) attempt started, by Redis's clock at its claim."""
    return sorted(int(broker.redis.hget(keys.run(r), "started_ms")) for r in run_ids)


# -- limits across workers -----------------------------------------------------------


def test_a_shared_limit_is_never_exceeded_across_two_workers(client, worker, broker):
    # Given two workers with 4 slots each, and summarize and translate sharing MODEL (2)
    worker(name="w1", concurrency=4)
    worker(name="w2", concurrency=4)
    run_ids = [submit(client, "summarize" if i % 2 else "translate", {"seconds": 0.1}) for i in range(24)]
    runs = finished(client, run_ids)
    assert {r["status"] for r in runs} == {"completed"}
    # Then never more than 2 at once over both processors and both workers, and 2 were
    intervals = [iv for r in run_ids for iv in held(broker, r)]
    assert len(intervals) == 24 and most_at_once(intervals) == 2
    assert {broker.redis.hget(keys.run(r), "worker") for r in run_ids} == {"w1", "w2"}
    assert broker.redis.hget(keys.limit(0, "n:model"), "n") == "0"  # every unit given back


def test_starts_stay_within_a_rate_limit_over_any_window(client, worker, broker):
    # paced: 5/s (GCRA, burst 1: one start per 200 ms), on two workers
    worker(name="w1", concurrency=4)
    worker(name="w2", concurrency=4)
    run_ids = [submit(client, "paced", {}) for _ in range(12)]
    finished(client, run_ids)
    at = starts(broker, run_ids)
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    assert min(gaps) >= 200, gaps
    # so any window of one second holds at most 5 starts plus the burst
    assert max(sum(1 for t in at if s <= t <= s + 1000) for s in at) <= 6


def test_a_run_weighs_its_cost_on_a_shared_budget(client, drain, broker):
    # complete: TOKENS is 100/s, each run weighs input.max_tokens
    run_ids = [submit(client, "complete", {"max_tokens": 50}) for _ in range(4)]
    drain(concurrency=4)
    at = starts(broker, run_ids)
    assert [b - a >= 500 for a, b in zip(at, at[1:], strict=False)] == [True] * 3  # 50 tokens = 500 ms
    # A run without the field its cost is read from is refused, naming it
    r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "complete"}, headers=HEADERS)
    assert r.status_code == 422 and "input.max_tokens" in r.json["error"]["message"]


def test_each_key_has_its_own_cap_and_keys_take_turns(client, worker, broker):
    # crawl: one at a time per domain; one worker with 4 slots
    worker(concurrency=4)
    busy = [submit(client, "crawl", {"domain": "busy.example", "seconds": 0.3}) for _ in range(6)]
    quiet = [submit(client, "crawl", {"domain": "quiet.example", "seconds": 0.3}) for _ in range(2)]
    finished(client, busy + quiet)
    busy_iv = [iv for r in busy for iv in held(broker, r)]
    quiet_iv = [iv for r in quiet for iv in held(broker, r)]
    assert most_at_once(busy_iv) == 1 and most_at_once(quiet_iv) == 1
    # The quiet domain did not wait for the busy one's backlog: both its runs ended
    # before the busy domain's last run started
    assert max(end for _, end in quiet_iv) <= max(start for start, _ in busy_iv)
    # A run without a key is refused, naming the path
    r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "crawl"}, headers=HEADERS)
    assert r.status_code == 422 and "input.domain" in r.json["error"]["message"]


def test_rate_limited_pauses_the_limit_for_every_worker_and_spends_no_retry(client, worker, broker):
    worker(name="w1", concurrency=2)
    worker(name="w2", concurrency=2)
    # polite (no retries, holds MODEL) is told "retry after 3 s" on its first attempt
    polite = submit(client, "polite", {"retry_after": 3})
    wait_until(lambda: broker.redis.hget(keys.run(polite), "interruptions") == "1")
    paused_until = int(broker.redis.hget(keys.limit(0, "n:model"), "until"))
    # a run of another processor that shares MODEL, made meanwhile, waits out the pause, saying so
    other = submit(client, "summarize", {"seconds": 0})
    wait_until(lambda: any(w["detail"].get("waiting") == "paused" for w in get(client, other)["warnings"] or []))
    polite_run, other_run = finished(client, [polite, other])
    assert polite_run["status"] == "completed" and polite_run["errors"] == []
    assert json.loads(broker.redis.hget(keys.run(polite), "output"))["attempt"] == 2
    assert other_run["status"] == "completed"
    assert min(starts(broker, [polite]) + starts(broker, [other])) >= paused_until


def test_a_killed_worker_holding_limited_runs_gives_their_units_back(client, worker, broker):
    # Given a worker holding both units of MODEL with runs that are never retried
    first = worker(name="first", concurrency=4)
    holding = [submit(client, "ponder", {"seconds": 30}) for _ in range(2)]
    wait_until(lambda: all(get(client, r)["status"] == "running" for r in holding))
    waiting = [submit(client, "summarize", {"seconds": 0}) for _ in range(3)]
    assert all(get(client, r)["status"] == "queued" for r in waiting)
    # When it is killed, and another worker starts
    first.kill()
    worker(name="second", concurrency=4)
    # Then the lost runs fail when their lease runs out, their units come back, and the
    # waiting runs start; never more than 2 at once
    lost = finished(client, holding)
    assert all(r["status"] == "failed" for r in lost)
    assert all(r["status"] == "completed" for r in finished(client, waiting))
    intervals = [iv for r in holding + waiting for iv in held(broker, r)]
    assert most_at_once(intervals) == 2
    assert min(s for r in waiting for s, _ in held(broker, r)) >= min(e for r in holding for _, e in held(broker, r))
    assert broker.redis.hget(keys.limit(0, "n:model"), "n") == "0"


# -- lanes -------------------------------------------------------------------------


def test_a_tenants_backlog_delays_another_tenant_by_about_one_run(client, worker, broker):
    worker(concurrency=2)
    backlog = [submit(client, "io_wait", {"seconds": 0.05}) for _ in range(100)]
    wait_until(lambda: get(client, backlog[0])["status"] != "queued")
    theirs = [submit(client, "io_wait", {"seconds": 0.05}, key=OTHER_KEY) for _ in range(3)]
    finished(client, theirs, key=OTHER_KEY)
    last_start = max(starts(broker, theirs))
    # The other tenant's runs started while most of the backlog still waited: lanes
    # take turns, so at most a few backlog runs went between each of theirs
    started = [broker.redis.hget(keys.run(r), "started_ms") for r in backlog]
    ahead = sum(1 for s in started if s is not None and int(s) < last_start)
    assert ahead <= 12, ahead
    finished(client, backlog)


def test_the_tenant_cap_holds_across_workers_and_leaves_room_for_others(client, worker, broker):
    capped = broker.settings.replace(tenant_concurrency=2)
    worker(settings=capped, name="w1", concurrency=3)
    worker(settings=capped, name="w2", concurrency=3)
    mine = [submit(client, "io_wait", {"seconds": 0.2}) for _ in range(8)]
    theirs = [submit(client, "io_wait", {"seconds": 0.2}, key=OTHER_KEY) for _ in range(4)]
    finished(client, mine)
    finished(client, theirs, key=OTHER_KEY)
    mine_iv = [iv for r in mine for iv in held(broker, r)]
    theirs_iv = [iv for r in theirs for iv in held(broker, r)]
    assert most_at_once(mine_iv) == 2 and most_at_once(theirs_iv) == 2
    assert most_at_once(mine_iv + theirs_iv) > 2  # the other tenant ran beside


def test_workers_serving_different_processors_on_one_queue_take_only_their_own(client, worker, broker):
    broker.redis.zrem(keys.WORKERS, "test-worker")  # only real workers from here on
    worker(name="example", concurrency=4)
    worker(settings=broker.settings.replace(app=("tests.apps.other",)), name="other", concurrency=4)
    wait_until(lambda: broker.redis.hexists(keys.PROCESSORS, "other_echo"))
    ours = [submit(client, "echo", {"i": i}) for i in range(20)]
    others = [submit(client, "other_echo", {"i": i}) for i in range(20)]
    runs = finished(client, ours + others)
    assert {(r["status"], r["errors"] == []) for r in runs} == {("completed", True)}
    assert {broker.redis.hget(keys.run(r), "attempts") for r in ours + others} == {"1"}
    assert {broker.redis.hget(keys.run(r), "worker") for r in ours} == {"example"}
    assert {broker.redis.hget(keys.run(r), "worker") for r in others} == {"other"}


# -- declarations ------------------------------------------------------------------


def test_a_worker_declaring_a_limit_with_another_budget_than_a_live_one_refuses_to_start(spawn, worker, broker):
    worker(name="first")
    conflicting = broker.settings.replace(app=("workers.app", "tests.apps.conflicting"))
    second = spawn("worker", "--name", "second", settings=conflicting)
    assert second.wait(30) != 0
    said = second.output()
    assert "Limit 'model' is declared here as concurrency 5, burst 1, but live worker" in said
    assert "declares concurrency 2, burst 1" in said


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: Limit("model", rate_limit="lots/s"), "rate_limit 'lots/s'"),
        (lambda: Limit("model", rate_limit="0/s"), "rate_limit '0/s'"),
        (lambda: Limit("model"), "needs a rate_limit, a concurrency"),
        (lambda: Limit("bad name!", concurrency=1), "Limit name 'bad name!'"),
        (lambda: Limit("model", concurrency=0), "concurrency must be"),
        (lambda: check_path("output.x", "crawl: key"), "'output.x' is not a key path"),
        (lambda: task(name="k", key="input.")(lambda inp: inp), "'input.' is not a key path"),
        (lambda: task(name="k", rate_limit="5 per s")(lambda inp: inp), "k: rate_limit '5 per s'"),
        (lambda: task(name="k", limits=[Limit("x", concurrency=1).cost("body")])(lambda i: i), "cost of x"),
    ],
)
def test_a_bad_declaration_fails_at_once_naming_what(declare, message):
    with pytest.raises(LimitDeclarationError, match=None) as raised:
        declare()
    assert message in str(raised.value)


def test_a_run_held_back_by_a_limit_says_so_on_its_run_in_info_on_the_dashboard_and_in_metrics(client, broker):
    run_ids = [submit(client, "ponder", {"seconds": 0}) for _ in range(3)]
    # A worker takes what MODEL (concurrency 2) lets it: two
    taken = Claimer(broker, [load_apps(broker.settings.app)["ponder"]], "tester:1").claim(3)
    assert sorted(r.id for r in taken) == sorted(run_ids[:2])
    # The third says why it waits
    details = [w["detail"] for w in get(client, run_ids[2])["warnings"] or []]
    assert {"waiting": "limit", "limit": "n:model", "in_flight": 2} in details
    # taskq info
    shown = CliRunner().invoke(main, ["info", "--json"], env=settings_env(broker.settings), catch_exceptions=False)
    (model,) = [li for li in json.loads(shown.stdout)["limits"] if li["id"] == "n:model"]
    assert (model["in_flight"], model["concurrency"], model["runs_waiting"], model["lanes_waiting"]) == (2, 2, 1, 1)
    assert model["started_this_minute"] + model["started_last_minute"] == model["started"] == 2
    table = CliRunner().invoke(main, ["info"], env=settings_env(broker.settings)).stdout
    assert "n:model" in table and "lanes held back" in table and "waiting for n:model" in table
    # the dashboard
    assert client.post("/dashboard/login", data={"api_key": API_KEY}).status_code == 302
    page = client.get("/dashboard/").data.decode()
    assert re.search(r"<td>n:model</td><td>2</td><td>2</td><td>–</td>\s*<td>[0-2]</td><td>[0-2]</td><td>1</td>", page)
    assert "<td>ponder</td><td>" in page and "waiting for n:model" in page
    # /metrics
    metrics = client.get("/metrics").data.decode()
    assert 'taskq_limit_in_flight{limit="n:model"} 2.0' in metrics
    assert 'taskq_limit_runs_waiting{limit="n:model"} 1.0' in metrics
    assert 'taskq_limit_units_started_total{limit="n:model"} 2.0' in metrics


def test_rates_parse_as_units_per_period():
    assert Rate.parse("500/m", "x") == Rate(500, 60)
    assert Rate.parse("10/s", "x").interval_ms == 100
    assert Rate.parse("3/10s", "x") == Rate(3, 10)
    assert Rate.parse("1000 / hour", "x") == Rate(1000, 3600)


def test_a_claim_that_parks_a_lane_on_its_rate_says_when_it_is_due(client, broker):
    # (a lone worker must come back for the next start when the rate allows it, not at its next sweep)
    run_ids = [submit(client, "paced", {}) for _ in range(3)]
    claimer = Claimer(broker, [load_apps(broker.settings.app)["paced"]], "tester:1")
    (first,) = claimer.claim(3)
    assert first.id == run_ids[0] and not claimer.hot
    assert claimer.due_ms[0] == first.started_ms + 200  # paced: 5/s


def test_a_rate_faster_than_one_a_millisecond_admits_many_in_one_millisecond(client, broker):
    run_ids = [submit(client, "complete", {"max_tokens": 1}) for _ in range(20)]
    # a worker whose TOKENS budget is a million a second (Redis's clock counts milliseconds)
    fast = Declared(shared=[("tokens", Budget(rate=Rate.parse("1000000/s", "tokens")), "input.max_tokens")])
    taken = Claimer(broker, [Processor(name="complete", func=lambda inp: inp, flow=fast)], "tester:1").claim(20)
    assert sorted(r.id for r in taken) == sorted(run_ids)
