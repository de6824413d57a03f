"""GET /v1/tasks/runs: the tenant's runs, newest first, paged by an opaque cursor."""

from __future__ import annotations

import time

from taskq import keys
from tests.conftest import HEADERS, OTHER_KEY


def make(client, n: int, processor: str = "echo", headers=HEADERS) -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    for i in range(n):
        time.sleep(0.002)  # the list is ordered to the millisecond (run ids lead with it)
        r = client.post("/v1/tasks/runs", json={"input": {"i": i}, "processor": processor}, headers=headers)
        assert r.status_code == 202
        ids.append(r.json["run_id"])
    return ids


def pages(client, query: str = "") -> list[list[str]]:  # type: ignore[no-untyped-def]
    out, cursor = [], None
    while True:
        url = "/v1/tasks/runs?" + query + (f"&cursor={cursor}" if cursor else "")
        r = client.get(url, headers=HEADERS)
        assert r.status_code == 200, r.json
        out.append([run["run_id"] for run in r.json["runs"]])
        cursor = r.json["next_cursor"]
        if cursor is None:
            return out


def test_runs_are_listed_newest_first_across_pages(client):
    ids = make(client, 7)
    got = pages(client, "limit=3")
    assert got == [ids[::-1][0:3], ids[::-1][3:6], ids[::-1][6:7]]


def test_a_full_last_page_says_there_is_no_more(client):
    ids = make(client, 4)
    assert pages(client, "limit=2") == [ids[::-1][:2], ids[::-1][2:]]


def test_another_tenants_runs_are_never_listed(client):
    mine = make(client, 2)
    make(client, 3, headers={"x-api-key": OTHER_KEY})
    assert pages(client) == [mine[::-1]]


def test_status_and_processor_filters(client):
    echoes = make(client, 3, "echo")
    shouts = make(client, 2, "noop")
    cancelled = client.post(f"/v1/tasks/runs/{echoes[1]}/cancel", headers=HEADERS)
    assert cancelled.json["status"] == "cancelled"
    assert sum(pages(client, "processor=noop"), []) == shouts[::-1]
    assert sum(pages(client, "status=cancelled"), []) == [echoes[1]]
    assert sum(pages(client, "status=queued&processor=echo&limit=1"), []) == [echoes[2], echoes[0]]


def test_time_bounds(client):
    early = make(client, 2)
    time.sleep(0.01)
    middle = int(time.time() * 1000)
    time.sleep(0.01)
    late = make(client, 2)
    assert sum(pages(client, f"created_after={middle}"), []) == late[::-1]
    assert sum(pages(client, f"created_before={middle}"), []) == early[::-1]
    r = client.get("/v1/tasks/runs?created_after=2020-01-01T00:00:00Z", headers=HEADERS)
    assert len(r.json["runs"]) == 4


def test_expired_runs_are_skipped(client, broker):
    ids = make(client, 3)
    broker.redis.delete(keys.run(ids[1]))
    assert pages(client) == [[ids[2], ids[0]]]


def test_bad_arguments_are_422_naming_the_field(client):
    for query, field in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("limit=1000", "limit"),
        ("status=nope", "status"),
        ("cursor=abc", "cursor"),
        ("created_after=yesterday", "created_after"),
        ("created_before=%C2%B2", "created_before"),
        ("created_after=2026-01-01T00:00:00", "created_after"),
    ]:
        r = client.get(f"/v1/tasks/runs?{query}", headers=HEADERS)
        assert r.status_code == 422, query
        assert r.json["error"]["detail"]["field"] == field


def test_the_list_needs_a_key(client):
    assert client.get("/v1/tasks/runs").status_code == 401


def test_a_group_add_indexes_every_run(client):
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    inputs = [{"input": {"i": i}, "processor": "echo"} for i in range(120)]
    r = client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=HEADERS)
    assert r.status_code == 200
    listed = sum(pages(client, "limit=100"), [])
    assert sorted(listed) == sorted(r.json["run_ids"]) and len(listed) == 120


def test_metadata_filter(client):
    def make_with(meta: dict) -> str:  # type: ignore[type-arg]
        time.sleep(0.002)
        r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo", "metadata": meta}, headers=HEADERS)
        return str(r.json["run_id"])

    a = make_with({"team": "ops", "n": 2, "urgent": True})
    b = make_with({"team": "ops", "n": 3})
    make_with({"team": "web"})
    assert sum(pages(client, "metadata.team=ops"), []) == [b, a]
    assert sum(pages(client, "metadata.team=ops&metadata.n=2"), []) == [a]
    assert sum(pages(client, "metadata.urgent=true"), []) == [a]
    assert sum(pages(client, "metadata.missing=x"), []) == []
