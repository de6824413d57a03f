"""Hardening: the proxy never leaves an upstream's base path, bodies over the limit
are 413 whatever the encoding, client headers follow RFC 9110, internal fields are
not client-settable, and malformed ids, cursors and URLs are 4xx, never 500."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import flask
import pydantic_core
import pytest
import redis as redis_lib

from taskq import errors, keys
from taskq.gateway import create_app
from taskq.processor import Processor
from taskq.webhooks import address, signing
from tests.conftest import HEADERS
from tests.receiver import Answer, Receiver


@pytest.fixture
def upstream(receiver: Receiver) -> Receiver:
    """A real upstream that records every path it is asked for and answers `{}`."""
    receiver.respond = lambda request: Answer(200, b"{}")
    return receiver


@pytest.fixture
def proxied(broker, upstream):  # type: ignore[no-untyped-def]
    settings = broker.settings.replace(proxy_upstreams=(f"model={upstream.base}/api",))
    return settings, create_app(settings).test_client()


# --- proxy path escape -----------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["%2e%2e/x", "%252e%252e/x", "a/%2e%2e/%2e%2e/x", "%25252e%25252e/x", "..%2fx", "a/..%252f../x"]
)
def test_an_encoded_path_leaving_the_base_is_422_and_stores_nothing(broker, proxied, path):
    _settings, client = proxied
    before = set(broker.redis.keys("*"))
    r = client.post(f"/v1/async/model/{path}", json={}, headers=HEADERS)
    assert r.status_code == 422, r.json
    assert set(broker.redis.keys("*")) == before


@pytest.mark.parametrize("path", ["../../x", "a/../../x", "%2e%2e/x", "/../x", "..\\\\x"])
def test_a_direct_http_run_leaving_the_base_is_422(broker, proxied, path):
    _settings, client = proxied
    body = {"processor": "http", "input": {"upstream": "model", "path": path}}
    r = client.post("/v1/tasks/runs", json=body, headers=HEADERS)
    assert r.status_code == 422 and "input.path" in r.json["error"]["message"], r.json
    assert broker.redis.llen("rq:queue:default") == 0


def test_a_direct_http_run_with_an_unknown_upstream_is_422(proxied):
    _settings, client = proxied
    r = client.post("/v1/tasks/runs", json={"processor": "http", "input": {"upstream": "nope"}}, headers=HEADERS)
    assert r.status_code == 422 and "input.upstream" in r.json["error"]["message"]


def test_the_processor_itself_refuses_a_path_leaving_the_base(monkeypatch, upstream):
    # Given a run that reached a worker however it was written
    from taskq.processors.http import HttpRequest, call_upstream

    monkeypatch.setenv("TASKQ_PROXY_UPSTREAMS", f"model={upstream.base}/api")
    for path in ("../../x", "%252e%252e/secret", "a/%2e%2e/%2e%2e/x"):
        with pytest.raises(errors.ValidationFailed):
            call_upstream.func(HttpRequest(upstream="model", path=path))
    # And a path inside the base still goes there, decoded once and re-encoded
    call_upstream.func(HttpRequest(upstream="model", path="a/./b/../c"))
    assert upstream.paths() == ["/api/a/c"]


# --- bodies over the limit -------------------------------------------------------


def _chunked(client, path, size):  # type: ignore[no-untyped-def]
    """A body with no Content-Length, as a server that ends chunked bodies passes it."""
    return client.post(
        path,
        input_stream=io.BytesIO(b" " * size),
        headers={**HEADERS, "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("path", ["/v1/tasks/runs", "/v1/tasks/groups", "/v1/async/model/x"])
def test_a_chunked_body_over_the_limit_is_413(broker, proxied, path):
    _settings, client = proxied
    before = set(broker.redis.keys("*"))
    r = _chunked(client, path, 3 << 20)
    assert r.status_code == 413, r.json
    assert set(broker.redis.keys("*")) == before


def test_a_chunked_body_over_the_limit_is_413_through_gunicorn(broker, gunicorn, upstream):
    import requests

    settings = broker.settings.replace(proxy_upstreams=(f"model={upstream.base}/api",))
    url = gunicorn(settings)

    def chunks() -> Iterator[bytes]:
        yield b'{"input": {"pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}, "processor": "echo"}'

    for path in ("/v1/tasks/runs", "/v1/async/model/x"):
        try:
            r = requests.post(url + path, data=chunks(), headers=HEADERS, timeout=30)
        except requests.ConnectionError:
            continue  # the server may close before the client has sent it all
        assert r.status_code == 413, r.text
    assert broker.redis.llen("rq:queue:default") == 0
    assert upstream.paths() == []


# --- webhook headers and internal fields ------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Transfer-Encoding ": "chunked"},
        {"HOST ": "evil"},
        {"webhook-signature ": "v1,x"},
        {"Webhook-Id": "x"},
        {"X-A": "a\r\n b"},
        {"X-A": "a\x00"},
        {"X-A": "a\nX-B: c"},
        {"X A": "1"},
        {"": "1"},
        {"X-A": "é€"},
    ],
)
def test_a_webhook_header_that_is_not_rfc_9110_or_is_reserved_is_422(client, broker, headers):
    body = {"input": {}, "processor": "echo", "webhook": {"url": "http://127.0.0.1:9/x", "headers": headers}}
    r = client.post("/v1/tasks/runs", json=body, headers=HEADERS)
    assert r.status_code == 422 and "webhook.headers" in r.json["error"]["message"], r.json
    assert broker.redis.llen("rq:queue:default") == 0


def test_reserved_headers_are_dropped_on_the_wire_even_if_stored():
    sent = signing.request_headers(b"k", "id", 1, b"{}", {"HOST ": "x", " Webhook-Signature": "v1,x", "X-Ok": "1"})
    assert sent["webhook-signature"] != "v1,x" and "X-Ok" in sent
    assert not any(name.strip().lower() == "host" for name in sent)


def test_webhook_body_is_not_client_settable(client, broker):
    hook = {"url": "http://127.0.0.1:9/x", "body": "upstream_response"}
    run_id = client.post(
        "/v1/tasks/runs", json={"input": {}, "processor": "echo", "webhook": hook}, headers=HEADERS
    ).json["run_id"]
    record = broker.redis.hgetall(keys.run(run_id))
    assert "webhook_body" not in record and "body" not in json.loads(record["webhook"])


def test_proxy_runs_store_no_identity_or_hop_by_hop_headers(broker, proxied):
    _settings, client = proxied
    sent = {
        "Cookie": "s=1",
        "X-Forwarded-For": "1.2.3.4",
        "Forwarded": "for=x",
        "X-Real-IP": "1.2.3.4",
        "Proxy-Authorization": "x",
        "Trailer": "x",
        "X-Trace": "t1",
        "True-Client-IP": "1.2.3.4",
    }
    run_id = client.post("/v1/async/model/x", json={}, headers={**HEADERS, **sent}).json["run_id"]
    stored = json.loads(broker.redis.hget(keys.run(run_id), "input"))["headers"]
    assert {k.lower() for k in stored} == {"content-type"}  # the allow-list; tests/test_proxy.py has the rest


# --- 4xx, never 500 --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [":events", ":runs", ":attempts", "%0a"])
def test_ids_with_redis_key_suffixes_are_404(client, suffix):
    run_id = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS).json["run_id"]
    group_id = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    for path in (
        f"/v1/tasks/runs/{run_id}{suffix}",
        f"/v1/tasks/runs/{run_id}{suffix}/result?timeout=0",
        f"/v1/tasks/groups/{group_id}{suffix}",
        f"/v1/tasks/groups/{group_id}{suffix}/events",
        f"/v1/tasks/runs/{run_id}/webhook-deliveries/{run_id}.1{suffix}/redeliver",
    ):
        method = client.post if path.endswith("redeliver") else client.get
        assert method(path, headers=HEADERS).status_code == 404, path


@pytest.mark.parametrize("value", ["١٢٣", "18446744073709551616", "1-18446744073709551616", "5\n", "-1"])
def test_a_last_event_id_redis_would_refuse_is_422(client, value):
    group_id = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    for stream in ("events", "runs"):
        r = client.get(
            f"/v1/tasks/groups/{group_id}/{stream}",
            query_string={"last_event_id": value, "timeout": "0"},
            headers=HEADERS,
        )
        assert r.status_code == 422, (stream, r.data)
    # A position (the group's runs stream) past what LRANGE takes (found by schemathesis)
    r = client.get(
        f"/v1/tasks/groups/{group_id}/runs", query_string={"last_event_id": "13197497158213310098"}, headers=HEADERS
    )
    assert r.status_code == 422


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999/x", "http://127.0.0.1:abc/x", "http://[::1/x", "http://[zz]/x", "http://a b/x"]
)
def test_a_malformed_webhook_url_is_422(client, url):
    body = {"input": {}, "processor": "echo", "webhook": {"url": url}}
    assert client.post("/v1/tasks/runs", json=body, headers=HEADERS).status_code == 422


# --- numbers JSON cannot carry ---------------------------------------------------


def redis_state(broker) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    """Every key and its serialised value: equal before and after means nothing changed."""
    raw = redis_lib.Redis.from_url(broker.settings.redis_url)
    try:
        return {key: raw.dump(key) for key in raw.keys("*")}
    finally:
        raw.close()


def waiting_run(client, drain) -> str:  # type: ignore[no-untyped-def]
    """A run of `spend`, waiting in action_required for its first answer."""
    run_id = client.post("/v1/tasks/runs", json={"input": {"amount": 1}, "processor": "spend"}, headers=HEADERS).json[
        "run_id"
    ]
    drain()
    assert client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json["status"] == "action_required"
    return str(run_id)


def json_endpoints(client, drain) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(path, body with X where a number goes) for every endpoint that takes JSON."""
    group_id = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    run_id = waiting_run(client, drain)
    return [
        ("/v1/tasks/runs", '{"input": {"x": [1, X]}, "processor": "echo"}'),
        ("/v1/tasks/runs", '{"input": {}, "processor": "echo", "metadata": {"m": X}}'),
        (
            "/v1/tasks/runs",
            '{"input": {}, "processor": "echo", "task_spec": {"output_schema": {"type": "json", "json_schema": {"maximum": X}}}}',
        ),
        ("/v1/tasks/groups", '{"metadata": {"m": X}}'),
        ("/v1beta/tasks/groups", '{"metadata": {"m": X}}'),
        (
            f"/v1/tasks/groups/{group_id}/runs",
            '{"inputs": [{"input": {}, "processor": "echo"}, {"input": {"x": X}, "processor": "echo"}]}',
        ),
        (f"/v1/tasks/groups/{group_id}/runs", '{"inputs": [{"input": {}, "processor": "echo", "metadata": {"m": X}}]}'),
        (f"/v1/tasks/runs/{run_id}/action", '{"input": {"approved": true, "x": X}}'),
    ]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400_on_every_json_endpoint(client, broker, drain, token):
    for path, body in json_endpoints(client, drain):
        before = redis_state(broker)
        r = client.post(path, data=body.replace("X", token), headers={**HEADERS, "Content-Type": "application/json"})
        assert r.status_code == 400 and "NaN and Infinity are not JSON" in r.json["error"]["message"], (
            path,
            body,
            r.json,
        )
        assert redis_state(broker) == before, (path, body)


FIELDS = [
    "input.x.1",
    "metadata.m",
    "task_spec.output_schema.json_schema.maximum",
    "metadata.m",
    "metadata.m",
    "inputs.1.input.x",
    "inputs.0.metadata.m",
    "input.x",
]


@pytest.mark.parametrize("literal", ["1e400", "-1E+400", "2.5e999", "9" * 400 + ".5"])
def test_a_number_too_large_for_a_double_is_422_naming_its_field_on_every_json_endpoint(client, broker, drain, literal):
    for (path, body), field in zip(json_endpoints(client, drain), FIELDS, strict=True):
        before = redis_state(broker)
        r = client.post(path, data=body.replace("X", literal), headers={**HEADERS, "Content-Type": "application/json"})
        assert r.status_code == 422, (path, body, r.status_code, r.text[:300])
        assert r.json["error"]["message"].startswith(f"{field}: numbers must be finite"), (path, r.json)
        assert r.json["error"]["detail"]["field"] == field
        assert redis_state(broker) == before, (path, body)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_python_callers_get_a_422_naming_the_field_for_a_non_finite_number(broker, client, drain, bad):
    from taskq.client import RunHandle, default_tenant
    from workers.app import echo

    run_id = waiting_run(client, drain)
    before = redis_state(broker)
    calls = {
        "input.deep.0": lambda: echo.put({"deep": [bad]}, broker=broker),
        "metadata.m": lambda: echo.put({}, metadata={"m": bad}, broker=broker),
        "input.x": lambda: RunHandle(broker, default_tenant(broker), run_id).answer({"approved": True, "x": bad}),
    }
    for field, call in calls.items():
        with pytest.raises(errors.ValidationFailed) as refused:
            call()
        assert refused.value.message.startswith(f"{field}: numbers must be finite") and refused.value.detail == {
            "field": field
        }
    assert redis_state(broker) == before


@pytest.fixture
def non_finite_output() -> Iterator[Processor]:
    """A processor (of this test process only) whose output holds NaN and an infinity."""
    from taskq.processor import REGISTRY, task

    def overflow(inp: dict) -> dict:
        return {"ratio": float("inf"), "values": [1.0, float("nan")]}

    yield task(name="test_non_finite_output", retries=0)(overflow)
    REGISTRY.pop("test_non_finite_output")


def test_an_output_with_a_non_finite_number_fails_the_run_and_is_not_stored(broker, client, drain, non_finite_output):
    from workers.app import echo  # noqa: F401  (the example app, as every worker has it)

    handle = non_finite_output.put({}, broker=broker)
    drain()
    r = client.get(f"/v1/tasks/runs/{handle.run_id}", headers=HEADERS)
    run = json.loads(r.data)  # strict: the answer is JSON
    assert run["status"] == "failed"
    assert "numbers must be finite" in run["error"]["message"] and run["error"]["message"].startswith(
        "OutputInvalid: output."
    )
    assert broker.redis.hget(keys.run(handle.run_id), "output") is None
    for key in broker.redis.keys("*"):  # no stored JSON anywhere holds a number that is not JSON
        if broker.redis.type(key) == "hash":
            for value in broker.redis.hvals(key):
                if value[:1] in ("{", "["):
                    pydantic_core.from_json(value, allow_inf_nan=False)


def test_dumps_never_writes_a_non_finite_number():
    from taskq.jsontext import dumps

    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError):
            dumps({"a": [bad]})
    assert dumps({"a": 1e308}) == '{"a":1e+308}'


ADDRESSES = [
    # (address, public?, what it is)
    ("8.8.8.8", True, "global IPv4"),
    ("2606:4700:4700::1111", True, "global unicast IPv6"),
    ("2001:4860:4860::8888", True, "global unicast IPv6"),
    ("127.0.0.1", False, "loopback"),
    ("::1", False, "loopback"),
    ("::", False, "unspecified"),
    ("10.1.2.3", False, "private"),
    ("224.0.0.1", False, "multicast"),
    ("::ffff:127.0.0.1", False, "IPv4-mapped, private"),
    ("::ffff:169.254.169.254", False, "IPv4-mapped, metadata"),
    ("::ffff:8.8.8.8", True, "IPv4-mapped, public: the IPv4 address decides"),
    ("::ffff:0:7f00:1", False, "SIIT IPv4-translated, private"),
    ("::ffff:0:808:808", False, "SIIT IPv4-translated, public: not global unicast"),
    ("::127.0.0.1", False, "IPv4-compatible (deprecated)"),
    ("::808:808", False, "IPv4-compatible (deprecated), public"),
    ("64:ff9b::7f00:1", False, "NAT64 well-known, private"),
    ("64:ff9b::a9fe:a9fe", False, "NAT64 well-known, metadata"),
    ("64:ff9b::808:808", True, "NAT64 well-known, public: the IPv4 address decides"),
    ("64:ff9b:1::808:808", False, "NAT64 local-use"),
    ("64:ff9b:1::7f00:1", False, "NAT64 local-use"),
    ("2002:7f00:1::1", False, "6to4, private"),
    ("2002:a9fe:a9fe::", False, "6to4, metadata"),
    ("2002:808:808::1", False, "6to4, public: refused outright"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False, "Teredo"),
    ("2001:0:808:808::1", False, "Teredo, public server"),
    ("fc00::1", False, "ULA"),
    ("fd12:3456:789a::1", False, "ULA"),
    ("fe80::1", False, "link-local"),
    ("fe80::1%eth0", False, "link-local with a zone"),
    ("fec0::1", False, "site-local (deprecated)"),
    ("ff02::1", False, "multicast, link scope"),
    ("ff0e::1", False, "multicast, global scope"),
    ("2001:db8::1", False, "documentation"),
    ("3fff::1", False, "documentation (RFC 9637)"),
    ("100::1", False, "discard-only"),
]


@pytest.mark.parametrize(("ip", "public", "what"), ADDRESSES, ids=[a for a, _, _ in ADDRESSES])
def test_only_global_unicast_addresses_are_public(ip, public, what):
    assert address.is_public(ip) is public, what


def test_the_422_for_a_private_webhook_does_not_echo_the_address(broker):
    client = create_app(broker.settings.replace(webhook_allow_private=False)).test_client()
    body = {"input": {}, "processor": "echo", "webhook": {"url": "http://localhost:9/x"}}
    r = client.post("/v1/tasks/runs", json=body, headers=HEADERS)
    assert r.status_code == 422 and "127.0.0.1" not in r.text and "::1" not in r.text


def test_an_idempotency_key_reused_with_another_body_is_422(client):
    headers = {**HEADERS, "Idempotency-Key": "k1"}
    first = client.post("/v1/tasks/runs", json={"input": {"a": 1}, "processor": "echo"}, headers=headers)
    again = client.post("/v1/tasks/runs", json={"input": {"a": 1}, "processor": "echo"}, headers=headers)
    assert again.status_code == 202 and again.json["run_id"] == first.json["run_id"]
    other = client.post("/v1/tasks/runs", json={"input": {"a": 2}, "processor": "echo"}, headers=headers)
    assert other.status_code == 422 and first.json["run_id"] in other.json["error"]["message"]


def test_adding_runs_makes_the_group_persist_in_the_same_step(client, broker):
    group_id = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    assert broker.redis.ttl(keys.group(group_id)) > 0
    # Given the group's events stream already expiring (as after a finished batch)
    broker.redis.xadd(keys.group_events(group_id), {"type": "x"})
    broker.redis.expire(keys.group_events(group_id), 100)
    added = client.post(
        f"/v1/tasks/groups/{group_id}/runs", json={"inputs": [{"input": {}, "processor": "echo"}]}, headers=HEADERS
    )
    assert added.status_code == 200
    for key in (keys.group(group_id), keys.group_runs(group_id), keys.group_events(group_id)):
        assert broker.redis.ttl(key) == -1, key


# --- a 500 names one ref, in the log and in the answer -------------------------------


@pytest.mark.parametrize("raised", [RuntimeError("boom"), redis_lib.ResponseError("WRONGTYPE"), KeyError("x")])
def test_a_500_answers_with_the_ref_its_log_line_names(broker, caplog, raised):
    app = create_app(broker.settings)
    failing = flask.Blueprint("failing", __name__)

    @failing.get("/v1/test-only/fail")
    def fail() -> str:
        raise raised

    app.register_blueprint(failing)  # on this test's app only: the product has no such route
    with caplog.at_level(logging.ERROR, logger="taskq.gateway"):
        r = app.test_client().get("/v1/test-only/fail", headers=HEADERS)
    assert r.status_code == 500
    ref = r.json["error"]["ref_id"]
    assert ref in r.json["error"]["message"]
    (logged,) = [rec for rec in caplog.records if rec.name == "taskq.gateway" and rec.exc_info]
    assert ref in logged.getMessage()
    app.extensions["taskq"].close()
