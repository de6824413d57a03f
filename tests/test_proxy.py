"""The async proxy: a slow upstream made asynchronous, never an arbitrary URL."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from taskq import keys
from taskq.gateway import create_app
from tests.conftest import HEADERS
from tests.receiver import Answer, Received, Receiver, serving


def _echo(request: Received) -> Answer:
    body = json.dumps({"echo": json.loads(request.body.decode() or "null"), "path": request.path}).encode()
    return Answer(200, body, {"content-type": "application/json"})


@pytest.fixture
def upstream(receiver: Receiver) -> str:
    """A real upstream that answers each request with its body and path."""
    receiver.respond = _echo
    return receiver.base


def test_a_proxied_call_returns_202_and_records_the_upstream_answer(broker, worker, upstream, receiver):
    settings = broker.settings.replace(proxy_upstreams=(f"model={upstream}/api",), proxy_forward_headers=("X-Trace",))
    worker("threads", settings=settings)
    client = create_app(settings).test_client()

    r = client.post(
        "/v1/async/model/predict?async=true&x=1", json={"prompt": "hi"}, headers={**HEADERS, "X-Trace": "t1"}
    )
    assert r.status_code == 202 and r.json["run_id"].startswith("trun_")

    result = client.get(f"/v1/tasks/runs/{r.json['run_id']}/result?timeout=20", headers=HEADERS).json
    assert result["output"]["content"]["status_code"] == 200
    assert result["output"]["content"]["body"] == {"echo": {"prompt": "hi"}, "path": "/api/predict?x=1"}
    sent = receiver.received[0].headers
    assert sent["X-Trace"] == "t1"
    assert "X-Api-Key" not in sent and "x-api-key" not in sent


def test_an_unknown_upstream_is_404_and_arbitrary_urls_are_impossible(broker, upstream):
    client = create_app(broker.settings.replace(proxy_upstreams=(f"model={upstream}",))).test_client()
    before = set(broker.redis.keys("*"))
    assert client.post("/v1/async/other/x", json={}, headers=HEADERS).status_code == 404
    assert client.post("/v1/async/model/../../etc", json={}, headers=HEADERS).status_code in (404, 422)
    assert client.post("/v1/async/model/x", json={}).status_code == 401
    assert set(broker.redis.keys("*")) == before


def test_webhook_endpoint_receives_the_upstream_response_body_signed(broker, worker, spawn, upstream):
    from standardwebhooks import Webhook

    from taskq.ids import tenant_of
    from taskq.webhooks import delivery
    from tests.conftest import wait_until

    settings = broker.settings.replace(proxy_upstreams=(f"model={upstream}",))
    worker("threads", settings=settings)
    spawn("dispatcher", settings=settings)
    client = create_app(settings).test_client()
    with serving() as hook_receiver:
        hook = hook_receiver.url("/done")
        r = client.post(f"/v1/async/model/predict?webhookEndpoint={hook}", json={"prompt": "hi"}, headers=HEADERS)
        assert r.status_code == 202
        got = wait_until(lambda: hook_receiver.at("/done"), timeout_s=20)[0]  # type: ignore[index]
    assert json.loads(got.body) == {"echo": {"prompt": "hi"}, "path": "/predict"}
    secret = delivery.tenant_secret(broker, tenant_of(HEADERS["x-api-key"]))
    Webhook(secret).verify(got.body, got.headers)


# --- what of the caller's request reaches the upstream --------------------------------

# Identity, origin and credential headers that proxies, CDNs and frameworks read;
# none of them may reach an upstream unless the operator names it.
IDENTITY = {
    "True-Client-IP": "1.2.3.4",
    "X-Client-IP": "1.2.3.4",
    "CF-Connecting-IP": "1.2.3.4",
    "Fastly-Client-IP": "1.2.3.4",
    "X-Cluster-Client-IP": "1.2.3.4",
    "X-Forwarded-For": "1.2.3.4",
    "X-Forwarded-Host": "a",
    "Forwarded": "for=x",
    "X-Real-IP": "1.2.3.4",
    "Cookie": "s=1",
    "Cookie2": "s=1",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-HTTP-Method-Override": "DELETE",
    "Via": "1.1 x",
    "From": "me@example.com",
    "Referer": "https://me.example/",
    "Origin": "https://me.example",
    "User-Agent": "mine/1",
    "Proxy-Authorization": "x",
    "Trailer": "x",
}
ALLOWED = {"Content-Type": "application/json", "Accept": "application/json", "Accept-Language": "fr"}


def stored_input(broker, run_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return json.loads(broker.redis.hget(keys.run(run_id), "input"))  # type: ignore[no-any-return]


def test_only_allow_listed_headers_are_stored_for_the_upstream(broker, upstream):
    # Given an operator who adds X-Trace, and tries to add taskq's own credentials
    settings = broker.settings.replace(
        proxy_upstreams=(f"model={upstream}",), proxy_forward_headers=("x-trace", "Authorization", "X-Api-Key")
    )
    client = create_app(settings).test_client()
    sent = {**IDENTITY, **ALLOWED, "X-Trace": "t1", "X-Other": "o"}
    run_id = client.post("/v1/async/model/x", data="{}", headers={**HEADERS, **sent}).json["run_id"]
    stored = stored_input(broker, run_id)["headers"]
    assert {k.lower(): v for k, v in stored.items()} == {k.lower(): v for k, v in {**ALLOWED, "X-Trace": "t1"}.items()}
    # Bearer auth to taskq is not forwarded either, even when the operator names it
    run_id = client.post(
        "/v1/async/model/x", data="{}", headers={"Authorization": f"Bearer {HEADERS['x-api-key']}"}
    ).json["run_id"]
    assert stored_input(broker, run_id)["headers"] == {}


def test_the_processor_forwards_only_allow_listed_headers_whatever_the_run_holds(monkeypatch, upstream, receiver):
    # Given a direct run of the `http` processor, whose headers a client wrote
    from taskq.processors.http import HttpRequest, call_upstream

    monkeypatch.setenv("TASKQ_PROXY_UPSTREAMS", f"model={upstream}")
    monkeypatch.setenv("TASKQ_PROXY_FORWARD_HEADERS", "X-Trace")
    call_upstream.func(
        HttpRequest(upstream="model", headers={**IDENTITY, **ALLOWED, "X-Trace": "t1", "x-api-key": "k"})
    )
    got = {k.lower(): v for k, v in receiver.received[0].headers.items()}
    assert got["x-trace"] == "t1" and got["accept-language"] == "fr"
    assert not {k.lower() for k in IDENTITY if k != "User-Agent"} & set(got) and "x-api-key" not in got
    assert got["user-agent"] != "mine/1"


@pytest.mark.parametrize(
    ("query", "forwarded"),
    [
        ("webhook%45ndpoint=http://127.0.0.1:9/h&x=1", [("x", "1")]),
        ("%77ebhookEndpoint=http://127.0.0.1:9/h&x=1", [("x", "1")]),
        ("a%73ync=true&x=1&async", [("x", "1")]),
        ("async=true&q=a+b&r=%2B&s=%26t%3D1&empty=", [("q", "a b"), ("r", "+"), ("s", "&t=1"), ("empty", "")]),
        ("async%3Dtrue=1&x=1", [("async=true", "1"), ("x", "1")]),  # not `async`: the upstream's own
    ],
)
def test_taskqs_own_query_parameters_are_dropped_by_their_decoded_name(broker, upstream, query, forwarded):
    client = create_app(broker.settings.replace(proxy_upstreams=(f"model={upstream}",))).test_client()
    r = client.post(f"/v1/async/model/x?{query}", data="{}", headers=HEADERS)
    assert r.status_code == 202, r.json
    stored = stored_input(broker, r.json["run_id"])["query"]
    assert parse_qsl(stored, keep_blank_values=True) == forwarded
    hook = broker.redis.hget(keys.run(r.json["run_id"]), "webhook")
    assert (hook is not None) == ("ndpoint=" in query)  # an encoded name is still the webhook


def test_every_byte_of_the_other_parameters_reaches_the_upstream(broker, upstream):
    client = create_app(broker.settings.replace(proxy_upstreams=(f"model={upstream}",))).test_client()
    r = client.post("/v1/async/model/x?async=true&q=%FF&r=%C3%A9&s=%2F", data="{}", headers=HEADERS)
    assert r.status_code == 202
    assert stored_input(broker, r.json["run_id"])["query"] == "q=%FF&r=%C3%A9&s=%2F"
