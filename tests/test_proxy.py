"""The async proxy: a slow upstream made asynchronous, never an arbitrary URL."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskq.gateway import create_app
from tests.conftest import HEADERS


class Upstream(BaseHTTPRequestHandler):
    seen: list[dict[str, object]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        Upstream.seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        answer = json.dumps({"echo": json.loads(body or "null"), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream():  # type: ignore[no-untyped-def]
    Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_proxied_call_returns_202_and_records_the_upstream_answer(broker, worker, upstream):
    settings = broker.settings.replace(proxy_upstreams=(f"model={upstream}/api",))
    worker("threads", settings=settings)
    client = create_app(settings).test_client()

    r = client.post("/v1/async/model/predict?async=true&x=1", json={"prompt": "hi"}, headers={**HEADERS, "X-Trace": "t1"})
    assert r.status_code == 202 and r.json["run_id"].startswith("trun_")

    result = client.get(f"/v1/tasks/runs/{r.json['run_id']}/result?timeout=20", headers=HEADERS).json
    assert result["output"]["content"]["status_code"] == 200
    assert result["output"]["content"]["body"] == {"echo": {"prompt": "hi"}, "path": "/api/predict?x=1"}
    sent = Upstream.seen[0]["headers"]
    assert sent["X-Trace"] == "t1"  # type: ignore[index]
    assert "X-Api-Key" not in sent and "x-api-key" not in sent  # type: ignore[operator]


def test_an_unknown_upstream_is_404_and_arbitrary_urls_are_impossible(broker, upstream):
    client = create_app(broker.settings.replace(proxy_upstreams=(f"model={upstream}",))).test_client()
    before = set(broker.redis.keys("*"))
    assert client.post("/v1/async/other/x", json={}, headers=HEADERS).status_code == 404
    assert client.post("/v1/async/model/../../etc", json={}, headers=HEADERS).status_code in (404, 422)
    assert client.post("/v1/async/model/x", json={}).status_code == 401
    assert set(broker.redis.keys("*")) == before


def test_webhook_endpoint_receives_the_upstream_response_body_signed(broker, worker, spawn, upstream):
    from standardwebhooks import Webhook

    from taskq import delivery
    from taskq.run import tenant_of
    from tests.conftest import wait_until
    from tests.test_webhooks import serving

    settings = broker.settings.replace(proxy_upstreams=(f"model={upstream}",))
    worker("threads", settings=settings)
    spawn("dispatcher", settings=settings)
    client = create_app(settings).test_client()
    with serving() as receiver:
        hook = receiver.url("/done")
        r = client.post(f"/v1/async/model/predict?webhookEndpoint={hook}", json={"prompt": "hi"}, headers=HEADERS)
        assert r.status_code == 202
        got = wait_until(lambda: receiver.at("/done"), timeout_s=20)[0]  # type: ignore[index]
    assert json.loads(got.body) == {"echo": {"prompt": "hi"}, "path": "/predict"}
    secret = delivery.tenant_secret(broker, tenant_of(HEADERS["x-api-key"]))
    Webhook(secret).verify(got.body, got.headers)
