"""What a run costs in Redis once it has ended: its event stream folded into its
record, the fields it no longer needs dropped, its payloads compressed, and big ones
in the output storage (gone with the run); and the budget of bytes per finished run,
measured as bench/memory.py does."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from bench import memory
from taskq import keys, outputs, payload
from taskq.broker import Broker
from taskq.folding import EVENTS_LINGER_S
from taskq.gateway import create_app
from taskq.record import FINISHED_DROP
from tests.conftest import HEADERS, wait_until
from tests.test_groups import sse_events


def submit(client, processor, input, **headers):  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": input, "processor": processor}, headers={**HEADERS, **headers})
    assert r.status_code == 202, r.json
    return r.json["run_id"]


def incompressible(size: int) -> str:
    return base64.b64encode(random.Random(size).randbytes(size)).decode()


@pytest.fixture
def offloading(broker: Broker, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings that offload every payload of 2,000 bytes or more to the directory
    `tmp_path/outputs`, and a gateway (in process) with them."""
    settings = broker.settings.replace(output_dir=str(tmp_path / "outputs"), payload_offload_bytes=2000)
    app = create_app(settings)
    yield settings, app.test_client(), tmp_path / "outputs"
    app.extensions["taskq"].close()


def blobs_of(root: Path, run_id: str) -> list[str]:
    return sorted(p.name.split("-")[0] for p in (root / run_id / "payload").glob("*")) if root.exists() else []


# --- Events: a finished run's stream is folded into its record ----------------------


def test_a_finished_runs_events_are_kept_in_its_record_and_read_as_they_were(broker, client, drain):
    # Given a run that reports progress, run to its end
    run_id = submit(client, "research", {"name": "Acme"})
    live = sse_events(client.get(f"/v1/tasks/runs/{run_id}/events?timeout=0", headers=HEADERS).data.decode())
    drain()

    # Then its events are in its record, and its stream goes within seconds
    assert broker.redis.hget(keys.run(run_id), "events")
    assert 0 < broker.redis.pttl(keys.run_events(run_id)) <= EVENTS_LINGER_S * 1000
    during = sse_events(client.get(f"/v1/tasks/runs/{run_id}/events", headers=HEADERS).data.decode())
    broker.redis.delete(keys.run_events(run_id))  # as it will be, a few seconds on

    # And read from the record, they are the same events, with the same ids, ending
    # with the run's terminal state; a resume continues after the id given
    after = sse_events(client.get(f"/v1/tasks/runs/{run_id}/events", headers=HEADERS).data.decode())
    assert after == during
    kinds = [(e["type"], e.get("run", {}).get("status")) for e in after]
    assert kinds == [
        ("task_run.state", "queued"),
        ("task_run.state", "running"),
        ("task_run.progress_msg.exec_status", None),
        ("task_run.state", "completed"),
    ]
    assert after[0]["event_id"] == live[0]["event_id"]
    assert after[1]["run"]["attempts"] == 1 and after[1]["run"]["finished_at"] is None
    assert after[-1]["run"]["finished_at"] == after[-1]["run"]["modified_at"]
    url = f"/v1/tasks/runs/{run_id}/events?last_event_id={after[1]['event_id']}"
    resumed = sse_events(client.get(url, headers=HEADERS).data.decode())
    assert resumed == after[2:]


def test_a_retried_run_folds_every_attempt(broker, client, drain):
    # Given a run that fails twice before it succeeds
    run_id = submit(client, "flaky", {"failures": 2})
    drain()
    broker.redis.delete(keys.run_events(run_id))

    # Then its folded events tell each attempt as it was
    events = sse_events(client.get(f"/v1/tasks/runs/{run_id}/events", headers=HEADERS).data.decode())
    states = [(e["run"]["status"], e["run"]["attempts"], len(e["run"]["errors"])) for e in events]
    assert states == [
        ("queued", 0, 0),
        ("running", 1, 0),
        ("queued", 1, 1),
        ("running", 2, 1),
        ("queued", 2, 2),
        ("running", 3, 2),
        ("completed", 3, 2),
    ]
    assert events[2]["run"]["next_attempt_at"] is not None and events[3]["run"]["next_attempt_at"] is None
    assert len({e["run"]["started_at"] for e in events[1:]}) == 3


def test_a_finished_run_drops_what_it_no_longer_needs_and_shows_the_same(broker, client, drain):
    # Given a run before and after it ends
    run_id = submit(client, "echo", {"a": 1})
    assert broker.redis.hget(keys.run(run_id), "lane")
    drain()

    # Then its record holds none of the fields a finished run is not read for
    stored = broker.redis.hgetall(keys.run(run_id))
    assert not set(FINISHED_DROP) & set(stored), stored
    run = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "completed" and run["priority"] == "normal"
    assert run["modified_at"] == run["finished_at"] and run["next_attempt_at"] is None


def test_a_late_progress_message_makes_no_stream(broker, client, drain):
    from taskq.context import CurrentRun

    run_id = submit(client, "echo", {})
    drain()
    broker.redis.delete(keys.run_events(run_id))
    CurrentRun(run_id, 1, broker).progress("from a thread that outlived its run")
    assert not broker.redis.exists(keys.run_events(run_id))


# --- Payloads: compressed, and offloaded past a threshold ---------------------------


def test_payloads_past_the_threshold_are_compressed_and_read_back_the_same(broker, client, drain):
    # Given a realistic ~1 KB record as input to a processor that returns it, and a small one
    record = memory.text_payload(7)
    big, small = submit(client, "echo", record), submit(client, "echo", {"a": 1})
    drain()

    # Then the large one's input and output are stored compressed, the small one's as JSON
    raw = broker.redis.hgetall(keys.run(big))
    assert raw["input"].startswith("\x00z") and raw["output"].startswith("\x00z")
    assert len(payload.to_bytes(raw["input"])) < len(json.dumps(record, separators=(",", ":"))) * 0.7
    assert broker.redis.hget(keys.run(small), "input") == '{"a":1}'

    # And every read shows them as given
    assert client.get(f"/v1/tasks/runs/{big}/input", headers=HEADERS).json["input"] == record
    assert client.get(f"/v1/tasks/runs/{big}/result", headers=HEADERS).json["output"]["content"] == record
    assert client.get(f"/v1/tasks/runs/{small}/result", headers=HEADERS).json["output"]["content"] == {"a": 1}


def test_every_form_makes_the_round_trip_through_redis(broker):
    # Given JSON texts short and long, ASCII and not, and zlib bytes that are not UTF-8
    texts = ['{"a":1}', json.dumps(memory.text_payload(3)), json.dumps("é" * 900, ensure_ascii=False), "[]"]
    for text in texts:
        packed = payload.pack(text, compress_bytes=512)
        # Then what zlib does not shrink, or what is short, is kept as it is
        assert packed.startswith(payload.MARK_ZLIB) == (len(text.encode()) >= 512)
        broker.redis.hset("t", "p", packed)
        # And what Redis gives back reads as the same text
        assert payload.text(broker.redis.hget("t", "p")) == text
    assert payload.pack('{"a":1}', compress_bytes=1) == b'{"a":1}'  # zlib would make it longer
    assert payload.pack(json.dumps(memory.text_payload(3)), compress_bytes=0).startswith(b"{")  # 0: never


def test_big_payloads_live_in_the_output_storage_and_read_back_the_same(broker, drain, offloading):
    settings, api, root = offloading
    # Given inputs past the offload threshold, to a processor that returns its input
    blob = {"blob": incompressible(3000)}
    run_id = submit(api, "echo", blob)
    raw = broker.redis.hget(keys.run(run_id), "input")
    assert payload.referenced(raw) and blobs_of(root, run_id) == ["input"]
    assert api.get(f"/v1/tasks/runs/{run_id}/input", headers=HEADERS).json["input"] == blob

    # When it runs, its output goes there too
    drain(settings)
    assert payload.referenced(broker.redis.hget(keys.run(run_id), "output"))
    assert blobs_of(root, run_id) == ["input", "output"]
    got = api.get(f"/v1/tasks/runs/{run_id}/result", headers=HEADERS).json
    assert got["output"]["content"] == blob and got["run"]["outputs_count"] == 0
    lines = api.get(f"/v1/tasks/runs/{run_id}/events", headers=HEADERS).data.decode()
    assert sse_events(lines)[-1]["run"]["status"] == "completed"


def test_answers_past_the_threshold_live_in_the_output_storage(broker, drain, offloading):
    settings, api, root = offloading
    run_id = submit(api, "spend", {"amount": 3})
    drain(settings)
    first = api.post(f"/v1/tasks/runs/{run_id}/action", json={"input": {"approved": True}}, headers=HEADERS)
    assert first.status_code == 200, first.json
    drain(settings)
    note = "n" * 150 + incompressible(1500)[:50]
    small = settings.replace(payload_offload_bytes=100)  # the answers list passes 100 bytes
    app = create_app(small)
    try:
        second = app.test_client().post(f"/v1/tasks/runs/{run_id}/action", json={"input": note}, headers=HEADERS)
        assert second.status_code == 200, second.json
        assert payload.referenced(broker.redis.hget(keys.run(run_id), "answers"))
    finally:
        app.extensions["taskq"].close()
    drain(small)
    got = api.get(f"/v1/tasks/runs/{run_id}/result", headers=HEADERS).json
    assert got["output"]["content"] == {"approved": True, "note": note}
    assert "answers" in blobs_of(root, run_id)


def test_offloaded_payloads_are_deleted_when_their_run_expires(broker, drain, offloading):
    settings, api, root = offloading
    short = settings.replace(retention_s=1)
    app = create_app(short)
    try:
        run_id = submit(app.test_client(), "echo", {"blob": incompressible(3000)})
    finally:
        app.extensions["taskq"].close()
    drain(short)
    assert blobs_of(root, run_id) == ["input", "output"]
    assert broker.redis.zscore(keys.outputs_expiring(0), run_id) is not None

    # When its retention has passed, the output-file sweep takes its payloads too
    sweeper = Broker(short)
    try:
        wait_until(lambda: outputs.sweep(sweeper, 0) or not (root / run_id).exists(), timeout_s=10)
    finally:
        sweeper.close()
    assert not (root / run_id).exists() and not broker.redis.exists(keys.run(run_id))


def test_a_create_that_makes_no_run_keeps_no_payload(broker, offloading):
    _settings, api, root = offloading
    body = {"blob": incompressible(3000)}
    first = submit(api, "echo", body, **{"Idempotency-Key": "once"})
    assert submit(api, "echo", body, **{"Idempotency-Key": "once"}) == first
    assert [p.parent.parent.name for p in root.rglob("*") if p.is_file()] == [first]


def test_without_a_configured_storage_nothing_is_offloaded(broker, client, drain):
    settings = broker.settings.replace(payload_offload_bytes=100)
    assert not settings.output_dir and not settings.output_url
    app = create_app(settings)
    try:
        run_id = submit(app.test_client(), "echo", {"blob": incompressible(3000)})
    finally:
        app.extensions["taskq"].close()
    raw = broker.redis.hget(keys.run(run_id), "input")
    assert raw.startswith("\x00z") and payload.referenced(raw) is None


# --- The budget ---------------------------------------------------------------------


@pytest.mark.slow  # (300 runs, then the 5 s their streams linger)
def test_a_finished_run_costs_at_most_its_payload_plus_600_bytes():
    # Given runs with a realistic ~1 KB JSON input and the same output, run to their end
    report = memory.measure(runs=300, payload="text")
    # Then Redis holds at most their payload plus 600 bytes each (3,000 runs measured
    # ~1,890 B against a 1,994 B payload; before, 5,075 B)
    assert report.per_run_bytes <= report.payload_bytes + memory.TARGET_OVER_PAYLOAD, memory.table([report])
    assert "run events" not in report.by_kind
