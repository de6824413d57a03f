"""/metrics: counters and histograms kept in Redis by the Lua steps, so that every
gateway reports the whole system's figures, whatever process made the change."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from taskq import keys
from taskq.metrics import _from_fields
from tests.conftest import HEADERS, wait_until
from tests.test_webhooks import cancelled_run, state_of


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    r = client.get("/metrics")
    assert r.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(r.data.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def submit(client, processor: str, input: dict) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor}, headers=HEADERS)
    assert r.status_code == 202, r.json
    return str(r.json["run_id"])


def ended(client, run_id: str) -> bool:  # type: ignore[no-untyped-def]
    return not client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json["is_active"]


def test_run_counters_and_histograms_follow_every_transition(client, worker):
    runs = [submit(client, "echo", {}), submit(client, "broken", {}), submit(client, "flaky", {"failures": 1})]
    cancelled = submit(client, "echo", {"late": True})
    assert client.post(f"/v1/tasks/runs/{cancelled}/cancel", headers=HEADERS).status_code == 200
    worker()
    for run_id in runs:
        wait_until(lambda run_id=run_id: ended(client, run_id), timeout_s=30)

    m = scrape(client)
    assert m[("taskq_runs_created_total", (("processor", "echo"),))] == 2
    assert m[("taskq_runs_created_total", (("processor", "flaky"),))] == 1
    assert m[("taskq_runs_finished_total", (("processor", "echo"), ("status", "completed")))] == 1
    assert m[("taskq_runs_finished_total", (("processor", "echo"), ("status", "cancelled")))] == 1
    assert m[("taskq_runs_finished_total", (("processor", "broken"), ("status", "failed")))] == 1
    assert m[("taskq_runs_finished_total", (("processor", "flaky"), ("status", "completed")))] == 1
    assert m[("taskq_attempts_total", (("outcome", "retried"), ("processor", "flaky")))] == 1
    assert m[("taskq_attempts_total", (("outcome", "completed"), ("processor", "flaky")))] == 1
    assert m[("taskq_attempts_total", (("outcome", "failed"), ("processor", "broken")))] == 1
    # Four attempts started: echo, broken, flaky twice; each waited and each ran.
    waits = sum(v for (name, _), v in m.items() if name == "taskq_queue_wait_seconds_count")
    durations = sum(v for (name, _), v in m.items() if name == "taskq_run_duration_seconds_count")
    assert waits == 4 and durations == 4
    inf = m[("taskq_queue_wait_seconds_bucket", (("le", "+Inf"), ("processor", "flaky")))]
    assert inf == m[("taskq_queue_wait_seconds_count", (("processor", "flaky"),))] == 2
    assert m[("taskq_run_duration_seconds_sum", (("outcome", "completed"), ("processor", "echo")))] >= 0
    # The gauges are still there.
    assert m[("taskq_runs_running", ())] == 0


def test_webhook_attempts_are_counted_with_their_latency(client, spawn, receiver, broker):
    receiver.answers["/flaky"] = ["500", "200"]
    run_id = cancelled_run(client, receiver.url("/flaky"))
    spawn("dispatcher", settings=broker.settings)
    wait_until(lambda: state_of(client, run_id) == "delivered")
    m = scrape(client)
    assert m[("taskq_webhook_deliveries_total", (("outcome", "failed"),))] == 1
    assert m[("taskq_webhook_deliveries_total", (("outcome", "delivered"),))] == 1
    assert m[("taskq_webhook_latency_seconds_count", (("outcome", "delivered"),))] == 1


def test_buckets_are_exact_and_cumulative_for_rounded_durations():
    # 4 ms, 25 ms exactly (on a bound), 26 ms and 2.6 s, as count_transition writes them.
    fields = {
        "run|queued|running|4|p": "1",
        "run|queued|running|25|p": "2",
        "run|queued|running|26|p": "1",
        "run|queued|running|2600|p": "1",
    }
    (hist,) = [f for f in _from_fields(fields) if f.name == "taskq_queue_wait_seconds"]
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["0.005"] == 1 and buckets["0.025"] == 3 and buckets["0.05"] == 4
    assert buckets["2.5"] == 4 and buckets["5.0"] == 5 and buckets["+Inf"] == 5
    (total,) = [s.value for s in hist.samples if s.name.endswith("_sum")]
    assert abs(total - (0.004 + 0.050 + 0.026 + 2.55)) < 1e-9


def hincrbys(broker) -> int:  # type: ignore[no-untyped-def]
    return int(broker.redis.info("commandstats").get("cmdstat_hincrby", {}).get("calls", 0))


def test_one_command_per_transition_on_the_metrics_hash(client, broker):
    broker.redis.config_resetstat()
    run_id = submit(client, "echo", {})
    assert broker.redis.hgetall(keys.metrics(0)) == {"run||queued||echo": "1"}
    # a run without a group or webhook increments nothing else but its queue's depth
    assert hincrbys(broker) == 2
    client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    assert broker.redis.hgetall(keys.metrics(0)) == {"run||queued||echo": "1", "run|queued|cancelled||echo": "1"}
    assert hincrbys(broker) == 4  # and out of its lane: the depth again
    # Nothing else is counted per run: the dashboard's chart samples this hash (history.py)
    assert broker.redis.keys("*metrics*") == [keys.metrics(0)]
