"""Client JSON Schemas: nothing outside the schema is resolved, and the work a schema
can cause is bounded (size, depth, RE2 patterns, O(n) uniqueItems)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskq import keys
from tests.conftest import HEADERS, wait_until


class Recorder:
    """A real local HTTP server that records every request it gets."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.paths.append(self.path)
                body = b'{"type": "string", "const": "SECRET-FROM-REMOTE"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/schema.json"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def create(client, input, schema, where="input_schema"):  # type: ignore[no-untyped-def]
    spec = {where: {"type": "json", "json_schema": schema}}
    processor = "shout" if isinstance(input, str) else "echo"
    return client.post("/v1/tasks/runs", json={"input": input, "processor": processor, "task_spec": spec}, headers=HEADERS)


@pytest.mark.parametrize("where", ["input_schema", "output_schema"])
@pytest.mark.parametrize("ref_kind", ["http", "file", "dynamic", "nested"])
def test_a_schema_ref_outside_itself_is_422_and_fetches_nothing(client, broker, recorder, where, ref_kind):
    ref = {"http": recorder.url, "file": "file:///etc/passwd", "dynamic": recorder.url, "nested": recorder.url}[ref_kind]
    schema: dict = {"$ref": ref}
    if ref_kind == "dynamic":
        schema = {"$dynamicRef": ref}
    if ref_kind == "nested":
        schema = {"type": "object", "properties": {"a": {"items": [{"$ref": ref}]}}, "$defs": {"x": {"$ref": ref}}}
    r = create(client, {"a": "x"}, schema, where)
    assert r.status_code == 422, r.json
    assert "only local '#/…' refs" in r.json["error"]["message"] and ref in r.json["error"]["message"]
    assert "root:" not in r.text  # /etc/passwd content never comes back
    assert recorder.paths == []
    assert broker.redis.llen("rq:queue:default") == 0


def test_local_refs_and_defs_still_work(client):
    schema = {"$defs": {"name": {"type": "string", "minLength": 2}}, "type": "object",
              "properties": {"name": {"$ref": "#/$defs/name"}}, "required": ["name"]}  # fmt: skip
    assert create(client, {"name": "Acme"}, schema).status_code == 202
    r = create(client, {"name": "A"}, schema)
    assert r.status_code == 422 and r.json["error"]["detail"]["field"] == "input.name"


def test_the_worker_fetches_no_ref_of_a_stored_output_schema(client, broker, worker, recorder):
    # Given a run whose stored output_schema refers outside itself (as one written
    # before the create-time check, or by hand, would)
    good = {"type": "object"}
    run_id = create(client, {"a": 1}, good, "output_schema").json["run_id"]
    broker.redis.hset(keys.run(run_id), "output_schema", f'{{"$ref": "{recorder.url}"}}')
    other = create(client, {"a": 1}, good, "output_schema").json["run_id"]
    broker.redis.hset(keys.run(other), "output_schema", '{"$ref": "file:///etc/passwd"}')
    # When a worker runs them
    worker()

    def ended(rid: str) -> dict | None:
        got = client.get(f"/v1/tasks/runs/{rid}", headers=HEADERS).json
        return got if got["status"] in ("completed", "failed") else None

    # Then they fail on the schema, nothing was fetched and no file content is shown
    for rid in (run_id, other):
        run = wait_until(lambda rid=rid: ended(rid), timeout_s=30)
        assert run["status"] == "failed" and "only local" in run["error"]["message"], run  # type: ignore[index]
        assert "root:" not in str(run)
    assert recorder.paths == []


def _deep(levels: int) -> dict:
    schema: dict = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(
    "schema, problem",
    [
        ({"type": "object", "description": "x" * 70_000}, "bytes"),
        (_deep(40), "deeper"),
        ({"type": "object", "properties": {str(i): {} for i in range(5000)}}, "keywords"),
        ({"type": "string", "pattern": "(a)\\1"}, "not supported"),
        ({"type": "string", "pattern": "(?=a)"}, "not supported"),
    ],
)
def test_an_oversized_or_unsupported_schema_is_422(client, schema, problem):
    r = create(client, "x", schema)
    assert r.status_code == 422 and problem in r.json["error"]["message"], r.json


def test_a_catastrophic_pattern_answers_at_once_and_others_are_served(client):
    # (a+)+$ against "aaaa…!" backtracks exponentially in a backtracking engine.
    schema = {"type": "string", "pattern": "^(a+)+$"}
    r = create(client, "a" * 5000 + "!", schema)
    assert r.status_code == 422 and "does not match" in r.json["error"]["message"]
    assert create(client, "a" * 5000, schema).status_code == 202


def test_unique_items_over_a_huge_array_is_linear_and_exact(client):
    schema = {"type": "array", "uniqueItems": True}
    items = [{"id": i, "tags": ["x", i]} for i in range(20_000)]
    assert create(client, {"list": items}, {"type": "object", "properties": {"list": schema}}).status_code == 202
    r = create(client, {"list": [*items, {"tags": ["x", 7], "id": 7.0}]}, {"type": "object", "properties": {"list": schema}})
    assert r.status_code == 422 and "non-unique" in r.json["error"]["message"]
    # true and 1 are different JSON values; 1 and 1.0 are the same
    assert create(client, {"list": [1, True]}, {"type": "object", "properties": {"list": schema}}).status_code == 202
