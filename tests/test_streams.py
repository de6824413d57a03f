"""Streams: one tenant's open streams and long polls cannot take the gateway from
others (the gateway serves them on gevent, no thread each, and caps them per tenant:
429); a stream whose `timeout` has passed still sends every event written until then.
"""

from __future__ import annotations

import threading

import requests

from taskq import keys
from tests.conftest import HEADERS, OTHER_KEY, wait_until
from tests.test_groups import sse_events

GROUPS = "/v1/tasks/groups"
CAP = 3
OTHER = {"x-api-key": OTHER_KEY}


def _post(url: str, path: str, body: dict, headers: dict = HEADERS) -> requests.Response:  # type: ignore[type-arg]
    return requests.post(url + path, json=body, headers=headers, timeout=10)


def test_a_tenant_at_its_stream_cap_gets_429_and_another_tenant_is_served(broker, gunicorn):
    # One gateway process, so that the per-process cap is the whole picture.
    url = gunicorn(broker.settings.replace(max_streams_per_tenant=CAP), workers=1)
    gid = _post(url, GROUPS, {}).json()["taskgroup_id"]
    run_id = _post(url, "/v1/tasks/runs", {"input": {}, "processor": "echo"}).json()["run_id"]
    # No worker runs: the group stays active, so its streams stay open.
    assert _post(url, f"{GROUPS}/{gid}/runs", {"inputs": [{"input": {}, "processor": "echo"}]}).status_code == 200

    # Given a tenant holding its cap: two streams and one long poll
    held = [requests.get(f"{url}{GROUPS}/{gid}/events", headers=HEADERS, stream=True, timeout=30) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    polled: list[int] = []

    def long_poll() -> None:
        # A probe below may hold the last slot for a moment: then try again.
        while not polled or polled[-1] == 429:
            polled.append(
                requests.get(f"{url}/v1/tasks/runs/{run_id}/result?timeout=10", headers=HEADERS, timeout=60).status_code
            )

    poll = threading.Thread(target=long_poll)
    poll.start()
    probe = f"{url}/v1/tasks/runs/{run_id}/result?timeout=0"  # 408 when it gets a slot, holding nothing after
    wait_until(lambda: requests.get(probe, headers=HEADERS, timeout=10).status_code == 429, timeout_s=12)

    # When it asks for one more stream or long poll, Then it is 429 with Retry-After
    for path in (
        f"{GROUPS}/{gid}/events",
        f"{GROUPS}/{gid}/runs",
        f"/v1/tasks/runs/{run_id}/events",
        f"/v1/tasks/runs/{run_id}/result",
    ):
        r = requests.get(url + path, headers=HEADERS, timeout=10)
        assert (
            r.status_code == 429
            and int(r.headers["Retry-After"]) > 0
            and "open streams" in r.json()["error"]["message"]
        ), path

    # And another tenant is served: its POSTs and its own streams
    assert _post(url, "/v1/tasks/runs", {"input": {}, "processor": "echo"}, OTHER).status_code == 202
    other_gid = _post(url, GROUPS, {}, OTHER).json()["taskgroup_id"]
    _post(url, f"{GROUPS}/{other_gid}/runs", {"inputs": [{"input": {}, "processor": "echo"}]}, OTHER)
    with requests.get(f"{url}{GROUPS}/{other_gid}/events", headers=OTHER, stream=True, timeout=30) as r:
        assert r.status_code == 200
    # And the capped tenant's ordinary requests still work
    assert requests.get(f"{url}/v1/tasks/runs/{run_id}", headers=HEADERS, timeout=10).status_code == 200

    # When its streams close and the long poll ends, Then it has its slots back
    for r in held:
        r.close()
    poll.join(30)
    assert polled[-1] == 408  # the long poll ran its whole timeout, holding its slot
    wait_until(lambda: requests.get(probe, headers=HEADERS, timeout=10).status_code == 408, timeout_s=20)


def test_a_stream_with_timeout_0_sends_every_event_written_so_far_then_closes(client, broker, drain):
    # Given an active group whose event stream holds more than one read's worth (200)
    gid = client.post(GROUPS, json={}, headers=HEADERS).json["taskgroup_id"]
    inputs = [{"input": {"i": i}, "processor": "noop"} for i in range(250)]
    assert client.post(f"{GROUPS}/{gid}/runs", json={"inputs": inputs}, headers=HEADERS).status_code == 200
    drain()
    waiting = client.post(f"{GROUPS}/{gid}/runs", json={"inputs": inputs[:1]}, headers=HEADERS).json["run_ids"][0]
    stored = [entry_id for entry_id, _ in broker.redis.xrange(keys.group_events(gid))]
    assert len(stored) == 251  # 250 runs ended, then the group went inactive

    # When it is read with timeout=0, Then every stored event comes, once, in order, and the stream ends
    events = sse_events(client.get(f"{GROUPS}/{gid}/events?timeout=0", headers=HEADERS).data.decode())
    assert [e["event_id"] for e in events] == stored
    # And resumed with timeout=0, the rest after the given event
    rest = sse_events(
        client.get(f"{GROUPS}/{gid}/events?timeout=0&last_event_id={stored[99]}", headers=HEADERS).data.decode()
    )
    assert [e["event_id"] for e in rest] == stored[100:]
    # And a run's stream likewise: the queued run's one state change so far
    run_events = sse_events(client.get(f"/v1/tasks/runs/{waiting}/events?timeout=0", headers=HEADERS).data.decode())
    assert [(e["type"], e["run"]["status"]) for e in run_events] == [("task_run.state", "queued")]
