"""Webhooks: signed deliveries, retries, dead-letter, accounting, SSRF — against a real
local receiver, real dispatcher and worker processes, and the official verifier."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from taskq import errors, keys
from taskq.broker import Broker
from taskq.gateway import create_app
from taskq.webhooks import transport
from tests.conftest import HEADERS, OTHER_KEY, free_port, wait_until
from tests.receiver import Received, serving


def make_run(client, url: str, processor: str = "echo", input: Any = None, **hook: Any) -> str:  # type: ignore[no-untyped-def]
    body = {"input": input if input is not None else {"n": 1}, "processor": processor, "webhook": {"url": url, **hook}}
    r = client.post("/v1/tasks/runs", json=body, headers=HEADERS)
    assert r.status_code == 202, r.json
    return str(r.json["run_id"])


def cancelled_run(client, url: str, **hook: Any) -> str:  # type: ignore[no-untyped-def]
    """A run that ends at once (cancelled while queued): a delivery without a worker."""
    run_id = make_run(client, url, **hook)
    assert client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS).json["status"] == "cancelled"
    return run_id


def deliveries(client, run_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    r = client.get(f"/v1/tasks/runs/{run_id}/webhook-deliveries", headers=HEADERS)
    assert r.status_code == 200, r.json
    return list(r.json["deliveries"])


def state_of(client, run_id: str) -> str | None:  # type: ignore[no-untyped-def]
    found = deliveries(client, run_id)
    return found[0]["state"] if found else None


def tenant_secret(client) -> str:  # type: ignore[no-untyped-def]
    return str(client.get("/v1/webhook-secret", headers=HEADERS).json["secret"])


def verify(secret: str, received: Received) -> dict[str, Any]:
    """The official standardwebhooks verifier; raises unless the signature is good."""
    return Verifier(secret).verify(received.body, received.headers)  # type: ignore[no-any-return]


# --- signed delivery and payload ----------------------------------------------------


def test_completed_run_is_delivered_signed_with_the_tenant_secret_and_its_output(client, drain, deliver, receiver):
    run_id = make_run(client, receiver.url("/hook"), input={"answer": 42}, headers={"Authorization": "Bearer jwt"})
    drain()
    deliver(until=lambda: state_of(client, run_id) == "delivered")
    (got,) = receiver.at("/hook")
    event = verify(tenant_secret(client), got)
    assert event["type"] == "task_run.status" and event["timestamp"].endswith("Z")
    assert event["data"]["run_id"] == run_id and event["data"]["status"] == "completed"
    assert event["data"]["output"] == {"type": "json", "content": {"answer": 42}, "basis": []}
    assert event["data"]["result_url"] == f"/v1/tasks/runs/{run_id}/result"
    assert got.headers["Authorization"] == "Bearer jwt"
    assert got.headers["webhook-signature"] != "v1,forged"
    (d,) = deliveries(client, run_id)
    assert got.headers["webhook-id"] == d["delivery_id"]
    assert d["event_status"] == "completed"
    (attempt,) = d["attempts"]
    assert attempt["status_code"] == 200 and attempt["error"] is None and attempt["outcome"] == "delivered"
    assert attempt["latency_ms"] >= 0 and attempt["attempted_at"].endswith("Z")


def test_every_status_change_is_delivered_when_asked_and_large_output_becomes_a_result_url(
    client, drain, deliver, receiver
):
    big = {"blob": "x" * (70 * 1024)}
    run_id = make_run(client, receiver.url("/all"), input=big, event_types=["task_run.state"])
    drain()
    deliver(until=lambda: [d["state"] for d in deliveries(client, run_id)] == ["delivered"] * 3)
    secret = tenant_secret(client)
    in_order = sorted(receiver.at("/all"), key=lambda r: int(r.headers["webhook-id"].rsplit(".", 1)[1]))
    events = [verify(secret, r) for r in in_order]
    # Each event says the status it reports, even when sent after the run had ended.
    assert [e["data"]["status"] for e in events] == ["queued", "running", "completed"]
    assert events[1]["data"]["is_active"] is True and "output" not in events[1]["data"]
    assert "output" not in events[2]["data"]
    assert events[2]["data"]["result_url"] == f"/v1/tasks/runs/{run_id}/result"


def test_client_secret_signs_and_webhook_id_is_stable_across_retries(client, deliver, receiver):
    secret = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="
    receiver.answers["/flaky"] = ["500", "500", "200"]
    run_id = cancelled_run(client, receiver.url("/flaky"), secret=secret)
    deliver(until=lambda: state_of(client, run_id) == "delivered")
    got = receiver.at("/flaky")
    assert len(got) == 3
    assert all(verify(secret, r)["data"]["status"] == "cancelled" for r in got)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    with pytest.raises(Exception, match="signature"):
        verify(tenant_secret(client), got[0])
    (d,) = deliveries(client, run_id)
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in d["attempts"]] == [
        (1, 500, "pending"),
        (2, 500, "pending"),
        (3, 200, "delivered"),
    ]
    assert d["attempts"][0]["error"] == "HTTP 500"


def test_a_secret_without_the_whsec_prefix_verifies_as_given(client, deliver, receiver):
    secret = "plainClientSecret123"
    run_id = cancelled_run(client, receiver.url("/plain"), secret=secret)
    deliver(until=lambda: state_of(client, run_id) == "delivered")
    assert verify(secret, receiver.at("/plain")[0])["data"]["run_id"] == run_id


def test_an_unusable_secret_is_422(client, broker):
    r = client.post(
        "/v1/tasks/runs",
        json={"input": {}, "processor": "echo", "webhook": {"url": "http://x.example", "secret": "whsec_a"}},
        headers=HEADERS,
    )
    assert r.status_code == 422 and "webhook.secret" in r.json["error"]["message"]
    assert not broker.redis.keys(keys.prefix(0) + "run:*")


def test_tenant_secret_is_made_once_per_tenant(client):
    first = tenant_secret(client)
    assert first.startswith("whsec_") and Verifier(first)
    assert tenant_secret(client) == first
    other = client.get("/v1/webhook-secret", headers={"x-api-key": OTHER_KEY}).json["secret"]
    assert other != first
    assert client.get("/v1/webhook-secret").status_code == 401


# --- failures, retries, dead letter -----------------------------------------------


def test_exhausted_delivery_is_dead_lettered_and_can_be_redelivered(client, deliver, receiver, broker):
    receiver.answers["/down"] = ["500"]
    run_id = cancelled_run(client, receiver.url("/down"))
    deliver(until=lambda: state_of(client, run_id) == "dead")
    (d,) = deliveries(client, run_id)
    schedule = broker.settings.webhook_schedule
    assert len(d["attempts"]) == len(schedule) + 1 == len(receiver.at("/down"))
    assert d["dead_at"] and d["next_attempt_at"] is None
    assert broker.redis.zscore(keys.deliveries_dead(0), d["delivery_id"]) is not None
    assert broker.redis.zscore(keys.deliveries_due(0), d["delivery_id"]) is None

    receiver.answers["/down"] = ["200"]
    url = f"/v1/tasks/runs/{run_id}/webhook-deliveries/{d['delivery_id']}/redeliver"
    r = client.post(url, headers=HEADERS)
    assert r.status_code == 202 and r.json["state"] == "pending"
    deliver(until=lambda: state_of(client, run_id) == "delivered")
    (d,) = deliveries(client, run_id)
    assert d["attempts"][-1]["status_code"] == 200 and d["attempts"][-1]["attempt"] == len(schedule) + 2
    assert broker.redis.zscore(keys.deliveries_dead(0), d["delivery_id"]) is None
    assert client.post(url, headers=HEADERS).status_code == 409


def test_410_stops_at_once(client, deliver, receiver, broker):
    receiver.answers["/gone"] = ["410", "200"]
    run_id = cancelled_run(client, receiver.url("/gone"))
    deliver(until=lambda: state_of(client, run_id) == "gone")
    (d,) = deliveries(client, run_id)
    assert [(a["status_code"], a["outcome"]) for a in d["attempts"]] == [(410, "gone")]
    assert broker.redis.zcard(keys.deliveries_due(0)) == 0
    assert len(receiver.at("/gone")) == 1


def test_redirects_and_refused_connections_are_failures(client, deliver, receiver):
    receiver.answers["/moved"] = ["302"]
    moved = cancelled_run(client, receiver.url("/moved"))
    refused = cancelled_run(client, f"http://127.0.0.1:{free_port()}/nobody")
    runs = (moved, refused)
    deliver(until=lambda: all(state_of(client, run_id) == "dead" for run_id in runs))
    assert {a["status_code"] for a in deliveries(client, moved)[0]["attempts"]} == {302}
    assert receiver.at("/redirected") == []
    errors = [a["error"] for a in deliveries(client, refused)[0]["attempts"]]
    assert all(a is not None and "Connection" in a for a in errors), errors


def test_retry_after_is_honoured(client, deliver, receiver, broker):
    settings = broker.settings.replace(webhook_schedule_s=("0.1", "5"))
    receiver.answers["/busy"] = ["503 retry-after 1", "200"]
    run_id = cancelled_run(client, receiver.url("/busy"))
    deliver(until=lambda: state_of(client, run_id) == "delivered", settings=settings)
    first = json.loads(broker.redis.lindex(keys.delivery_attempts(deliveries(client, run_id)[0]["delivery_id"]), 0))
    assert first["status_code"] == 503
    second = deliveries(client, run_id)[0]["attempts"][1]
    gap_ms = _ms(second["attempted_at"]) - first["at_ms"]
    assert gap_ms >= 1000  # the schedule alone would have retried after 100 ms


def _ms(iso_time: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() * 1000)


# --- concurrency and durability ---------------------------------------------------


def test_a_hanging_receiver_does_not_delay_other_deliveries(client, spawn, receiver, broker):
    settings = broker.settings.replace(webhook_timeout_s=30.0)
    receiver.answers["/slow"] = ["hang"]
    slow = [cancelled_run(client, receiver.url("/slow")) for _ in range(3)]
    fast = cancelled_run(client, receiver.url("/fast"))
    spawn("dispatcher", settings=settings)

    # All three slow deliveries are held open (nothing releases them) while the fast one is delivered.
    wait_until(lambda: len(receiver.at("/slow")) == 3 and state_of(client, fast) == "delivered")
    assert all(deliveries(client, run_id)[0]["attempts"] == [] for run_id in slow)
    receiver.release.set()
    wait_until(lambda: all(state_of(client, run_id) == "delivered" for run_id in slow))


def test_a_receiver_hanging_on_more_deliveries_than_threads_does_not_starve_another(client, spawn, broker):
    # Given more deliveries to a hanging receiver than the dispatcher has threads (and
    # than it looks past in one claim), all due before those to a healthy receiver
    settings = broker.settings.replace(webhook_timeout_s=30.0, dispatcher_concurrency=4, dispatcher_per_host=2)
    with serving() as dead, serving() as healthy:
        dead.answers["/hang"] = ["hang"]
        hanging = [cancelled_run(client, dead.url("/hang")) for _ in range(24)]
        fine = [cancelled_run(client, healthy.url("/ok")) for _ in range(6)]

        # When one dispatcher sends them
        spawn("dispatcher", settings=settings)

        # Then every healthy delivery arrives while the hanging receiver holds its
        # per-host share of the threads and no more
        wait_until(lambda: all(state_of(client, run_id) == "delivered" for run_id in fine))
        assert len(healthy.at("/ok")) == 6
        assert len(dead.at("/hang")) == settings.dispatcher_per_host
        assert all(deliveries(client, run_id)[0]["attempts"] == [] for run_id in hanging)


def test_deliveries_to_a_keep_alive_receiver_reuse_its_connections(client, spawn, broker):
    with serving(keep_alive=True) as rec:
        runs = [cancelled_run(client, rec.url("/kept")) for _ in range(30)]
        spawn("dispatcher", settings=broker.settings)

        wait_until(lambda: all(state_of(client, run_id) == "delivered" for run_id in runs))
        assert len(rec.at("/kept")) == 30
        # Never more connections than sends in flight to one receiver.
        assert len({r.peer for r in rec.at("/kept")}) <= broker.settings.dispatcher_per_host


def test_a_kept_alive_connection_the_receiver_closed_costs_no_failed_attempt(client, spawn, broker):
    with serving(keep_alive=True, idle_close_s=0.2) as rec:
        first = cancelled_run(client, rec.url("/idle"))
        spawn("dispatcher", settings=broker.settings)
        wait_until(lambda: state_of(client, first) == "delivered")
        wait_until(lambda: rec.closed == 1)  # the receiver hung up the idle connection

        second = cancelled_run(client, rec.url("/idle"))
        wait_until(lambda: state_of(client, second) == "delivered")
        assert [a["status_code"] for a in deliveries(client, second)[0]["attempts"]] == [200]
        assert len({r.peer for r in rec.at("/idle")}) == 2


def test_several_dispatchers_never_send_one_attempt_twice(client, spawn, receiver, broker):
    runs = [cancelled_run(client, receiver.url("/many")) for _ in range(40)]
    for _ in range(3):
        spawn("dispatcher", settings=broker.settings)

    wait_until(lambda: all(state_of(client, run_id) == "delivered" for run_id in runs), timeout_s=20)
    ids = [r.headers["webhook-id"] for r in receiver.at("/many")]
    assert len(ids) == len(set(ids)) == 40


def test_a_dispatcher_killed_mid_delivery_loses_nothing(client, spawn, receiver, broker):
    settings = broker.settings  # webhook_timeout_s=2: the claim is taken over 5 s after the kill
    receiver.answers["/once"] = ["hang", "200"]
    run_id = cancelled_run(client, receiver.url("/once"))
    first = spawn("dispatcher", settings=settings)
    wait_until(lambda: len(receiver.at("/once")) == 1)

    first.kill()
    spawn("dispatcher", settings=settings)

    wait_until(lambda: state_of(client, run_id) == "delivered")
    got = receiver.at("/once")
    assert len(got) == 2 and got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    (d,) = deliveries(client, run_id)
    assert [a["status_code"] for a in d["attempts"]] == [200]  # the killed attempt recorded nothing


def test_https_certificates_are_checked_against_the_url_host(client, spawn, broker, tmp_path: Path, monkeypatch):
    # A certificate for the name `localhost` only: the dispatcher connects to the
    # address it resolved, but checks the certificate against the URL's host.
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the dispatcher trusts this certificate
    with serving(tls) as rec:
        by_name = cancelled_run(client, f"https://localhost:{rec.port}/tls")
        by_address = cancelled_run(client, f"https://127.0.0.1:{rec.port}/tls")
        spawn("dispatcher", settings=broker.settings)

        wait_until(lambda: state_of(client, by_name) == "delivered" and state_of(client, by_address) == "dead")
        (got,) = rec.at("/tls")
        assert verify(tenant_secret(client), got)["data"]["run_id"] == by_name
        assert got.headers["Host"] == f"localhost:{rec.port}"
        errors = [a["error"] for a in deliveries(client, by_address)[0]["attempts"]]
        assert all("CERTIFICATE_VERIFY_FAILED" in e for e in errors), errors


# --- SSRF ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/h",
        "http://10.0.0.1/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/h",
        "http://localhost/h",
    ],
)
def test_private_webhook_urls_are_refused_at_create_time(broker, url):
    strict = create_app(broker.settings.replace(webhook_allow_private=False)).test_client()
    before = set(broker.redis.keys("*"))
    r = strict.post("/v1/tasks/runs", json={"input": {}, "processor": "echo", "webhook": {"url": url}}, headers=HEADERS)
    assert r.status_code == 422, r.json
    assert "webhook.url" in r.json["error"]["message"] and "non-public" in r.json["error"]["message"]
    assert set(broker.redis.keys("*")) == before


LOOPBACK = ("127.0.0.1", "::1")


def test_the_address_connected_to_is_checked_at_send_time(client, spawn, receiver, broker):
    # Created while private addresses were allowed (as if DNS had answered a public
    # address then); the dispatcher, which does not allow them, refuses to connect.
    run_id = cancelled_run(client, f"http://localhost:{receiver.port}/private")
    dispatcher = spawn("dispatcher", settings=broker.settings.replace(webhook_allow_private=False))

    wait_until(lambda: state_of(client, run_id) == "dead")
    attempts = deliveries(client, run_id)[0]["attempts"]
    assert all("non-public address" in a["error"] for a in attempts), attempts
    # The tenant reads no address of the operator's network; the operator's log has it.
    assert not any(ip in a["error"] for a in attempts for ip in LOOPBACK), attempts
    wait_until(lambda: any(f"non-public address {ip}" in dispatcher.output() for ip in LOOPBACK))
    assert receiver.at("/private") == []


def test_neither_refusal_names_the_address_it_refused():
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        # At resolve time
        sent = transport.send(f"http://localhost:{port}/x", b"{}", {}, timeout_s=2, allow_private=False)
        assert sent.error is not None and sent.error.startswith("refused") and sent.refused_address in LOOPBACK
        assert not any(ip in sent.error for ip in LOOPBACK)
        # At connect time: DNS answered a public address, the connection landed on a private one
        conn = transport._PinnedHTTP("localhost", port, address="127.0.0.1", allow_private=False, timeout=2)
        with pytest.raises(errors.DeliveryBlocked) as refused:
            conn.connect()
        assert refused.value.address == "127.0.0.1" and "127.0.0.1" not in str(refused.value)


# --- the API --------------------------------------------------------------------------


def test_deliveries_are_the_tenants_own_and_only_dead_ones_are_redelivered(client, broker: Broker):
    body = {"input": {}, "processor": "echo", "callback_webhook": {"url": "http://127.0.0.1:9/h"}}
    run_id = client.post("/v1/tasks/runs", json=body, headers=HEADERS).json["run_id"]
    client.post(f"/v1/tasks/runs/{run_id}/cancel", headers=HEADERS)
    (d,) = deliveries(client, run_id)
    assert d["state"] == "pending" and d["event_status"] == "cancelled" and d["attempts"] == []
    other = {"x-api-key": OTHER_KEY}
    base = f"/v1/tasks/runs/{run_id}/webhook-deliveries"
    assert client.get(base, headers=other).status_code == 404
    assert client.post(f"{base}/{d['delivery_id']}/redeliver", headers=other).status_code == 404
    assert client.post(f"{base}/{run_id}.99/redeliver", headers=HEADERS).status_code == 404
    assert client.post(f"{base}/trun_x.1/redeliver", headers=HEADERS).status_code == 404
    r = client.post(f"{base}/{d['delivery_id']}/redeliver", headers=HEADERS)
    assert r.status_code == 409 and r.json["error"]["detail"]["state"] == "pending"


# --- the tenant's dead-letter index ----------------------------------------------------


DEAD_ATTEMPT = {"attempt": 1, "at_ms": 0, "status_code": 500, "latency_ms": 1, "error": "HTTP 500", "outcome": "dead"}


def dead_letter_all_due(broker: Broker) -> int:
    """Claims every due delivery and gives each up through record_attempt, as a
    dispatcher does when a schedule runs out; returns how many."""
    from taskq.webhooks import delivery

    due = delivery.take_due(broker, 0, 10_000, 60, max_skips=1)
    for claim in due.claims:
        assert delivery.record_attempt(broker, claim, DEAD_ATTEMPT, "dead")
    return len(due.claims)


def due_deliveries(broker: Broker, run_id: str, n: int) -> None:
    """n more pending deliveries of the run, written as set_status writes one."""
    from taskq.clock import now_ms

    pipe = broker.redis.pipeline()
    for i in range(2, n + 2):
        did = f"{run_id}.{i}"
        pipe.hset(keys.delivery(did), mapping={"run_id": run_id, "status": "cancelled", "created_ms": now_ms()})
        pipe.rpush(keys.run_deliveries(run_id), did)
        pipe.zadd(keys.deliveries_due(0), {did: now_ms()})
    pipe.execute()


def test_a_tenants_dead_letters_are_shown_however_many_other_tenants_died_since(client, broker: Broker):
    from tests.test_dashboard import signed_in

    # Given one dead delivery of tenant B
    hook = {"url": "http://127.0.0.1:9/h"}
    theirs = client.post(
        "/v1/tasks/runs", json={"input": {}, "processor": "echo", "webhook": hook}, headers={"x-api-key": OTHER_KEY}
    ).json["run_id"]
    client.post(f"/v1/tasks/runs/{theirs}/cancel", headers={"x-api-key": OTHER_KEY})
    assert dead_letter_all_due(broker) == 1
    # And 2,100 of tenant A given up after it
    mine = cancelled_run(client, "http://127.0.0.1:9/h")
    due_deliveries(broker, mine, 2_099)
    assert dead_letter_all_due(broker) == 2_100
    assert broker.redis.zcard(keys.deliveries_dead(0)) == 2_101
    # When B reads its dead-letter page, Then its delivery is there, and A's are not
    b_page = client.application.test_client()
    signed_in(b_page, OTHER_KEY)
    page = b_page.get("/dashboard/webhooks").text
    assert theirs in page and mine not in page
    # And A sees its own newest
    signed_in(client)
    assert mine in client.get("/dashboard/webhooks").text and theirs not in client.get("/dashboard/webhooks").text
    # A redelivered one leaves the index
    r = client.post(
        f"/v1/tasks/runs/{theirs}/webhook-deliveries/{theirs}.1/redeliver", headers={"x-api-key": OTHER_KEY}
    )
    assert r.status_code == 202
    assert theirs not in b_page.get("/dashboard/webhooks").text


def test_the_tenants_dead_letter_index_keeps_to_the_retention(client, broker: Broker):
    from taskq.clock import now_ms
    from taskq.ids import tenant_of

    index = keys.tenant_dead(0, tenant_of(HEADERS["x-api-key"]))
    stale = now_ms() - broker.settings.retention_s * 1000 - 1
    broker.redis.zadd(index, {"trun_stale.1": stale})
    cancelled_run(client, "http://127.0.0.1:9/h")
    assert dead_letter_all_due(broker) == 1
    assert broker.redis.zscore(index, "trun_stale.1") is None and broker.redis.zcard(index) == 1
    assert 0 < broker.redis.ttl(index) <= broker.settings.retention_s
