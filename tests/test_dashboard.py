"""The dashboard, in-process: sign-in, the session cookie, tenant isolation, CSRF.
(tests/test_dashboard_browser.py drives it in a real browser.)"""

from __future__ import annotations

import html
import re

import flask
import pytest

from taskq.gateway.dashboard.auth import secret_key
from tests.conftest import API_KEY, HEADERS, OTHER_KEY


def signed_in(client, key: str = API_KEY):  # type: ignore[no-untyped-def]
    r = client.post("/dashboard/login", data={"api_key": key})
    assert r.status_code == 302, r.data
    return r


def csrf(client, path: str) -> str:  # type: ignore[no-untyped-def]
    page = client.get(path).data.decode()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def make_run(client, headers=HEADERS) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/v1/tasks/runs", json={"input": {"n": 1}, "processor": "echo"}, headers=headers)
    return str(r.json["run_id"])


def test_pages_need_a_session_and_send_you_to_sign_in(client):
    r = client.get("/dashboard/runs", headers={"Accept": "text/html"})
    assert r.status_code == 302 and r.location.startswith("/dashboard/login?next=/dashboard/runs")
    assert client.get("/dashboard/runs/x/events", headers={"Accept": "text/event-stream"}).status_code == 401
    # An API key does not stand in for the session, and the session not for an API key.
    assert client.get("/dashboard/runs", headers={**HEADERS, "Accept": "text/html"}).status_code == 302
    signed_in(client)
    assert client.get("/v1/tasks/runs").status_code == 401


def test_sign_in_sets_a_signed_http_only_same_site_cookie_without_the_key(client):
    r = signed_in(client)
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    assert API_KEY not in cookie
    assert client.get("/dashboard").status_code == 200


def test_the_session_is_the_dashboards_alone(client):
    # API calls never open it (no signer built per call, nothing read or written).
    app = client.application
    with app.test_request_context("/v1/tasks/runs", headers=HEADERS):
        assert app.session_interface.is_null_session(flask.session._get_current_object())
    with app.test_request_context("/dashboard/runs"):
        assert not app.session_interface.is_null_session(flask.session._get_current_object())
    signed_in(client)
    r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS)
    assert r.status_code == 202 and "Set-Cookie" not in r.headers
    assert client.get("/dashboard").status_code == 200  # still signed in


def test_a_wrong_key_is_refused(client):
    r = client.post("/dashboard/login", data={"api_key": "nope"})
    assert r.status_code == 401 and b"not known" in r.data
    assert client.get("/dashboard", headers={"Accept": "text/html"}).status_code == 302


def test_a_sign_in_posted_from_another_site_is_refused(client):
    r = client.post("/dashboard/login", data={"api_key": API_KEY}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "Set-Cookie" not in r.headers


def test_next_only_leads_back_into_the_dashboard(client):
    r = client.post("/dashboard/login?next=https://evil.example/", data={"api_key": API_KEY})
    assert r.location == "/dashboard"
    r = client.post("/dashboard/login?next=/dashboard/groups", data={"api_key": API_KEY})
    assert r.location == "/dashboard/groups"


def test_only_the_signed_in_tenants_runs_are_shown(client):
    mine = make_run(client)
    theirs = make_run(client, {"x-api-key": OTHER_KEY})
    signed_in(client)
    page = client.get("/dashboard/runs").data.decode()
    assert mine in page and theirs not in page
    assert client.get(f"/dashboard/runs/{theirs}").status_code == 404
    assert client.get(f"/dashboard/runs/{mine}").status_code == 200


def test_the_runs_page_filters_by_metadata(client):
    tagged = client.post(
        "/v1/tasks/runs", json={"input": {}, "processor": "echo", "metadata": {"team": "ops"}}, headers=HEADERS
    ).json["run_id"]
    plain = make_run(client)
    signed_in(client)
    page = client.get("/dashboard/runs?meta=team%3Dops").data.decode()
    assert tagged in page and plain not in page


def test_cancel_needs_the_sessions_csrf_token(client):
    run_id = make_run(client)
    signed_in(client)
    assert client.post(f"/dashboard/runs/{run_id}/cancel", data={}).status_code == 403
    assert client.post(f"/dashboard/runs/{run_id}/cancel", data={"csrf": "forged"}).status_code == 403
    token = csrf(client, f"/dashboard/runs/{run_id}")
    cross = client.post(
        f"/dashboard/runs/{run_id}/cancel", data={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json["status"] == "queued"
    r = client.post(f"/dashboard/runs/{run_id}/cancel", data={"csrf": token})
    assert r.status_code == 302
    assert client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json["status"] == "cancelled"


def test_sign_out_ends_the_session(client):
    signed_in(client)
    token = csrf(client, "/dashboard")
    assert client.post("/dashboard/logout", data={"csrf": token}).status_code == 302
    assert client.get("/dashboard", headers={"Accept": "text/html"}).status_code == 302


def test_a_cookie_captured_before_sign_out_is_refused_after_it(client, broker):
    # Given a signed-in session whose cookie someone copied
    run_id = make_run(client)
    signed_in(client)
    token = csrf(client, f"/dashboard/runs/{run_id}")
    captured = client.get_cookie("taskq_dashboard", path="/dashboard").value
    (open_key,) = broker.redis.keys("taskq:dashboard:session:*")
    assert 0 < broker.redis.ttl(open_key) <= broker.settings.dashboard_session_s  # it expires with the session
    # When the session signs out
    assert client.post("/dashboard/logout", data={"csrf": token}).status_code == 302
    assert broker.redis.keys("taskq:dashboard:session:*") == []
    # Then the copied cookie, replayed, opens nothing and changes nothing
    replay = client.application.test_client()
    replay.set_cookie("taskq_dashboard", captured, path="/dashboard")
    assert replay.get("/dashboard", headers={"Accept": "text/html"}).status_code == 302
    assert replay.get(f"/dashboard/runs/{run_id}/events", headers={"Accept": "text/event-stream"}).status_code == 401
    replay.set_cookie("taskq_dashboard", captured, path="/dashboard")
    assert replay.post(f"/dashboard/runs/{run_id}/cancel", data={"csrf": token}).status_code == 401
    assert client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json["status"] == "queued"
    # While another sign-in of the same key is not affected by it
    other = client.application.test_client()
    signed_in(other)
    assert other.get("/dashboard").status_code == 200


@pytest.mark.parametrize(
    "headers", [{"Origin": "null"}, {"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}]
)
def test_a_post_from_an_opaque_or_other_origin_is_refused_everywhere(client, headers):
    # Sign-in (login CSRF): no session is made
    r = client.post("/dashboard/login", data={"api_key": API_KEY}, headers=headers)
    assert r.status_code == 403 and "Set-Cookie" not in r.headers
    # Every state-changing POST of a signed-in session, with a good CSRF token
    run_id = make_run(client)
    signed_in(client)
    token = csrf(client, f"/dashboard/runs/{run_id}")
    for path in (
        f"/dashboard/runs/{run_id}/cancel",
        f"/dashboard/runs/{run_id}/deliveries/{run_id}.1/redeliver",
        "/dashboard/logout",
    ):
        assert client.post(path, data={"csrf": token}, headers=headers).status_code == 403, path
    assert client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json["status"] == "queued"
    assert client.get("/dashboard").status_code == 200  # still signed in


def test_a_post_of_this_site_or_of_no_browser_is_accepted(client):
    host = "http://localhost"  # the test client's host
    assert client.post("/dashboard/login", data={"api_key": API_KEY}, headers={"Origin": host}).status_code == 302
    assert (
        client.post(
            "/dashboard/login", data={"api_key": API_KEY}, headers={"Referer": host + "/dashboard/login"}
        ).status_code
        == 302
    )
    assert (
        client.post("/dashboard/login", data={"api_key": API_KEY}).status_code == 302
    )  # neither header: not a browser


def test_every_page_renders(client):
    run_id = make_run(client)
    gid = client.post("/v1/tasks/groups", json={"metadata": {"a": "b"}}, headers=HEADERS).json["taskgroup_id"]
    client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": [{"input": {}, "processor": "echo"}]}, headers=HEADERS)
    signed_in(client)
    for path in [
        "/dashboard",
        "/dashboard/runs",
        "/dashboard/runs?status=queued&processor=echo",
        f"/dashboard/runs/{run_id}",
        "/dashboard/groups",
        f"/dashboard/groups/{gid}",
        "/dashboard/webhooks",
        "/dashboard/runs?created_after=2020-01-01T00:00",
    ]:
        r = client.get(path)
        assert r.status_code == 200, (path, r.data[:300])
    assert gid in client.get("/dashboard/groups").data.decode()
    assert client.get(f"/dashboard/groups/{gid}/status").json["num_task_runs"] == 1
    assert client.get("/dashboard/runs?status=nope").status_code == 422


def test_the_session_secret_is_derived_from_the_keys_unless_set(settings):
    assert secret_key(settings) == secret_key(settings.replace(api_keys=tuple(reversed(settings.api_keys))))
    assert secret_key(settings) != secret_key(settings.replace(api_keys=("other",)))
    assert secret_key(settings.replace(secret_key="s3cret")) == "s3cret"


def test_a_run_page_renders_in_every_status_a_run_rests_in(client, drain):
    # Given runs resting in each status, the question of one waiting for an answer too
    drained = {}
    for processor, inp in (("echo", {"n": 1}), ("broken", {"message": "no luck"}), ("spend", {"amount": 12})):
        drained[processor] = client.post(
            "/v1/tasks/runs", json={"input": inp, "processor": processor}, headers=HEADERS
        ).json["run_id"]
    drain()
    queued, cancelled = make_run(client), make_run(client)
    client.post(f"/v1/tasks/runs/{cancelled}/cancel", headers=HEADERS)
    statuses = {
        rid: client.get(f"/v1/tasks/runs/{rid}", headers=HEADERS).json["status"]
        for rid in [queued, cancelled, *drained.values()]
    }
    assert set(statuses.values()) == {"queued", "cancelled", "completed", "failed", "action_required"}
    # When each run's page is read, Then it renders
    signed_in(client)
    for run_id, status in statuses.items():
        r = client.get(f"/dashboard/runs/{run_id}")
        assert r.status_code == 200, (status, r.data[:300])
        assert f'id="run-status">{status}<' in r.text
    waiting = html.unescape(client.get(f"/dashboard/runs/{drained['spend']}").text)
    assert "approve spending 12?" in waiting and '"approved"' in waiting
