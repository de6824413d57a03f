"""Client JSON Schemas: nothing outside the schema is resolved, and the work a schema
can cause is bounded (size, depth, RE2 patterns, O(n) uniqueItems)."""

from __future__ import annotations

import json

import pytest

from taskq import keys
from tests.conftest import HEADERS, wait_until
from tests.receiver import Answer, Receiver


@pytest.fixture
def recorder(receiver: Receiver) -> Receiver:
    """A real remote host that records every request and serves a schema to whoever
    fetches it: a ref that reaches it is a leak."""
    receiver.respond = lambda request: Answer(200, b'{"type": "string", "const": "SECRET-FROM-REMOTE"}')
    return receiver


def create(client, input, schema, where="input_schema"):  # type: ignore[no-untyped-def]
    spec = {where: {"type": "json", "json_schema": schema}}
    processor = "shout" if isinstance(input, str) else "echo"
    return client.post(
        "/v1/tasks/runs", json={"input": input, "processor": processor, "task_spec": spec}, headers=HEADERS
    )


@pytest.mark.parametrize("where", ["input_schema", "output_schema"])
@pytest.mark.parametrize("ref_kind", ["http", "file", "dynamic", "nested"])
def test_a_schema_ref_outside_itself_is_422_and_fetches_nothing(client, broker, recorder, where, ref_kind):
    ref = {
        "http": recorder.url("/schema.json"),
        "file": "file:///etc/passwd",
        "dynamic": recorder.url("/schema.json"),
        "nested": recorder.url("/schema.json"),
    }[ref_kind]
    schema: dict = {"$ref": ref}
    if ref_kind == "dynamic":
        schema = {"$dynamicRef": ref}
    if ref_kind == "nested":
        schema = {"type": "object", "properties": {"a": {"items": [{"$ref": ref}]}}, "$defs": {"x": {"$ref": ref}}}
    r = create(client, {"a": "x"}, schema, where)
    assert r.status_code == 422, r.json
    assert "only local '#/…' refs" in r.json["error"]["message"] and ref in r.json["error"]["message"]
    assert "root:" not in r.text  # /etc/passwd content never comes back
    assert recorder.paths() == []
    assert broker.redis.llen("rq:queue:default") == 0


def test_local_refs_and_defs_still_work(client):
    schema = {
        "$defs": {"name": {"type": "string", "minLength": 2}},
        "type": "object",
        "properties": {"name": {"$ref": "#/$defs/name"}},
        "required": ["name"],
    }
    assert create(client, {"name": "Acme"}, schema).status_code == 202
    r = create(client, {"name": "A"}, schema)
    assert r.status_code == 422 and r.json["error"]["detail"]["field"] == "input.name"


def test_the_worker_fetches_no_ref_of_a_stored_output_schema(client, broker, worker, recorder):
    # Given a run whose stored output_schema refers outside itself (as one written
    # before the create-time check, or by hand, would)
    good = {"type": "object"}
    run_id = create(client, {"a": 1}, good, "output_schema").json["run_id"]
    broker.redis.hset(keys.run(run_id), "output_schema", f'{{"$ref": "{recorder.url("/schema.json")}"}}')
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
    assert recorder.paths() == []


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
    r = create(
        client, {"list": [*items, {"tags": ["x", 7], "id": 7.0}]}, {"type": "object", "properties": {"list": schema}}
    )
    assert r.status_code == 422 and "non-unique" in r.json["error"]["message"]
    # true and 1 are different JSON values; 1 and 1.0 are the same
    assert create(client, {"list": [1, True]}, {"type": "object", "properties": {"list": schema}}).status_code == 202


# -- the work a schema causes through its refs, and while it is evaluated


def doubling(levels: int, ref: str = "pointer", combinator: str = "allOf") -> dict:
    """A schema of ~2 KB whose every definition refers to the next one twice: 2**levels
    copies of the last one with its refs inlined."""

    def name(i: int) -> str:
        return f"#/$defs/d{i}" if ref == "pointer" else f"#a{i}"

    keyword = "$dynamicRef" if ref == "dynamic" else "$ref"
    anchor = "$dynamicAnchor" if ref == "dynamic" else "$anchor"
    defs: dict = {f"d{i}": {combinator: [{keyword: name(i + 1)}, {keyword: name(i + 1)}]} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "object"}
    if ref != "pointer":
        for i in range(levels + 1):
            defs[f"d{i}"][anchor] = f"a{i}"
    return {"$defs": defs, "$ref": name(0)}


def nested(levels: int, leaf: object = 0) -> object:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("ref", ["pointer", "anchor", "dynamic"])
@pytest.mark.parametrize("where", ["input_schema", "output_schema"])
def test_a_schema_that_expands_exponentially_through_refs_is_422_and_writes_nothing(client, broker, ref, where):
    schema = doubling(30, ref)
    assert len(json.dumps(schema)) < 3000  # small as a document: the refs make it huge
    before = set(broker.redis.keys("*"))
    r = create(client, {}, schema, where)
    assert r.status_code == 422, r.json
    assert (
        r.json["error"]["message"] == f"task_spec.{where}: schema expands past 100,000 keywords with its refs inlined"
    )
    assert r.json["error"]["detail"]["field"] == f"task_spec.{where}"
    assert set(broker.redis.keys("*")) == before


def test_the_expansion_limit_holds_in_a_group_add_and_counts_each_ref_as_a_copy(client, broker):
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    before = set(broker.redis.keys("*"))
    spec = {"input_schema": {"type": "json", "json_schema": doubling(17, combinator="anyOf")}}
    body = {"inputs": [{"input": {}, "processor": "echo"}], "default_task_spec": spec}
    r = client.post(f"/v1/tasks/groups/{gid}/runs", json=body, headers=HEADERS)
    assert r.status_code == 422 and "expands past" in r.json["error"]["message"], r.json
    assert r.json["error"]["detail"]["field"] == "inputs.0.task_spec.input_schema"
    assert set(broker.redis.keys("*")) == before
    # Shared definitions used many times are fine while their copies stay under the limit
    assert create(client, {}, doubling(12)).status_code == 202


TREE = {
    "$ref": "#/$defs/node",
    "$defs": {
        "node": {
            "type": "object",
            "required": ["value"],
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
        }
    },
}
LIST = {
    "$anchor": "cell",
    "type": ["object", "null"],
    "properties": {"head": {"type": "string"}, "tail": {"$ref": "#cell"}},
}


def under_v(schema: dict) -> dict:
    """`schema` for the property `v` of an object (echo's input), its $defs at the root."""
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    return {"type": "object", "properties": {"v": inner}, "$defs": schema.get("$defs", {})}


def tree(depth: int) -> dict:
    node: dict = {"value": 0}
    for i in range(depth):
        node = {"value": i, "children": [node, {"value": -i}]}
    return node


def linked(length: int) -> object:
    cell = None
    for i in range(length):
        cell = {"head": str(i), "tail": cell}
    return cell


def test_recursive_schemas_still_work(client):
    assert create(client, {"v": tree(60)}, under_v(TREE)).status_code == 202
    assert create(client, {"v": linked(60)}, under_v(LIST)).status_code == 202
    bad = tree(20)
    bad["children"][0]["children"][1]["value"] = "x"
    r = create(client, {"v": bad}, under_v(TREE))
    assert r.status_code == 422 and r.json["error"]["detail"]["field"] == "input.v.children.0.children.1.value"
    r = create(client, {"v": {"head": "a", "tail": {"head": 2, "tail": None}}}, under_v(LIST))
    assert r.status_code == 422 and r.json["error"]["detail"]["field"] == "input.v.tail.head"


RECURSES_ON_THE_INSTANCE = {
    # Both branches go down the same instance: 2**depth evaluations for a list nested depth deep.
    "allOf": {"$ref": "#/$defs/a", "$defs": {"a": {"allOf": [{"items": {"$ref": "#/$defs/a"}}] * 2}}},
    "anyOf": {
        "$ref": "#/$defs/a",
        "$defs": {
            "a": {
                "anyOf": [
                    {"type": "array", "items": {"$ref": "#/$defs/a"}, "minItems": 2},
                    {"type": "array", "items": {"$ref": "#/$defs/a"}},
                ]
            }
        },
    },
}


@pytest.mark.parametrize(
    "schema, value",
    [
        (RECURSES_ON_THE_INSTANCE["allOf"], nested(40)),
        (RECURSES_ON_THE_INSTANCE["anyOf"], nested(40)),
        # a ref cycle that never moves into the instance
        ({"$ref": "#/$defs/a", "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}}, 1),
        # 3,000 descends into an empty schema for each of 100,000 items
        ({"allOf": [{"items": {}}] * 3000}, list(range(100_000))),
        # each failing branch quotes a 900 KB instance in its message
        ({"anyOf": [{"type": "integer", "minimum": i} for i in range(1500)]}, "x" * 900_000),
    ],
    ids=["allOf-down-the-instance", "anyOf-down-the-instance", "cycle", "empty-descends", "big-messages"],
)
def test_evaluation_past_its_step_budget_is_422_and_writes_nothing(client, broker, schema, value):
    before = set(broker.redis.keys("*"))
    r = create(client, {"v": value}, under_v(schema))
    assert r.status_code == 422, r.json
    assert r.json["error"]["message"].startswith("input: the schema's evaluation exceeded its budget"), r.json
    assert r.json["error"]["detail"]["field"] == "input"
    assert set(broker.redis.keys("*")) == before


def test_a_group_add_has_one_budget_for_all_its_inputs(client, broker):
    # One input costs about a sixth of the budget; eight in one request cost more than all of it.
    schema = under_v(RECURSES_ON_THE_INSTANCE["allOf"])
    assert create(client, {"v": nested(12)}, schema).status_code == 202
    gid = client.post("/v1/tasks/groups", json={}, headers=HEADERS).json["taskgroup_id"]
    before = set(broker.redis.keys("*"))
    spec = {"input_schema": {"type": "json", "json_schema": schema}}
    inputs = [{"input": {"v": nested(12)}, "processor": "echo"}] * 8
    r = client.post(f"/v1/tasks/groups/{gid}/runs", json={"inputs": inputs, "default_task_spec": spec}, headers=HEADERS)
    assert r.status_code == 422 and "exceeded its budget" in r.json["error"]["message"], r.json
    assert set(broker.redis.keys("*")) == before


@pytest.mark.parametrize(
    "schema",
    [
        # A `$schema` on a subschema would evaluate it with jsonschema's own draft-7
        # class: Python `re`, no budget. Refused.
        {
            "type": "object",
            "properties": {"v": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": "^(a+)+$"}},
        },
        {"type": "object", "$defs": {"x": {"$id": "https://example.com/x"}}},
        # A ref must point at a subschema, not into data
        {"type": "object", "const": {"type": 5}, "properties": {"v": {"$ref": "#/const"}}},
        {"type": "object", "properties": {"v": {"$ref": "#/$defs/missing"}}},
        {"type": "object", "properties": {"v": {"$ref": "#missing"}}},
        # RE2 programs are bounded, all patterns together
        {"type": "object", "properties": {f"p{i}": {"pattern": f".{{1000}}{i}"} for i in range(15)}},
    ],
    ids=["nested-$schema", "nested-$id", "ref-into-data", "ref-to-nothing", "anchor-to-nothing", "pattern-programs"],
)
def test_a_schema_taskq_cannot_bound_is_422_at_create(client, broker, schema):
    before = set(broker.redis.keys("*"))
    r = create(client, {"v": "a"}, schema)
    assert r.status_code == 422, r.json
    assert r.json["error"]["detail"]["field"] == "task_spec.input_schema", r.json
    assert set(broker.redis.keys("*")) == before


@pytest.mark.parametrize(
    "schema",
    [
        # `$ref: "#"` descends into a root that declares `$schema`: still RE2
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": ["object", "string"],
            "pattern": "^(a+)+$",
            "properties": {"v": {"$ref": "#"}},
        },
        # jsonschema matches patternProperties with Python `re` for these two keywords
        {"type": "object", "properties": {"v": {"patternProperties": {"^(a+)+$": {}}, "additionalProperties": False}}},
        {"type": "object", "properties": {"v": {"patternProperties": {"^(a+)+$": {}}, "unevaluatedProperties": False}}},
    ],
    ids=["root-$schema", "additionalProperties", "unevaluatedProperties"],
)
def test_a_catastrophic_pattern_runs_on_re2_in_every_keyword(client, schema):
    evil = "a" * 5000 + "!"
    r = create(client, {"v": evil if "pattern" in schema else {evil: 1}}, schema)
    assert r.status_code == 422 and r.json["error"]["detail"]["field"].startswith("input.v"), r.json


def test_the_worker_refuses_an_exploding_output_schema_written_behind_the_gateways_back(client, broker, drain):
    # Given runs whose stored output_schema the gateway would have refused
    good = {"type": "object"}
    exploding = create(client, {"a": 1}, good, "output_schema").json["run_id"]
    broker.redis.hset(keys.run(exploding), "output_schema", json.dumps(doubling(30)))
    cycling = create(client, {"a": 1}, good, "output_schema").json["run_id"]
    cycle = {"$ref": "#/$defs/a", "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}}
    broker.redis.hset(keys.run(cycling), "output_schema", json.dumps(cycle))
    # When a worker runs them, then they fail at the first attempt, saying why
    drain()
    for run_id, why in ((exploding, "expands past 100,000 keywords"), (cycling, "exceeded its budget")):
        run = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
        assert run["status"] == "failed" and run["attempts"] == 1, run
        assert "output_schema cannot be used" in run["error"]["message"] and why in run["error"]["message"], run


def test_an_output_past_its_evaluation_budget_fails_the_run_at_once(client, broker, drain):
    # The gateway accepts the schema (a few keywords); the output makes it recurse.
    schema = under_v(RECURSES_ON_THE_INSTANCE["allOf"])
    run_id = create(client, {"v": nested(40)}, schema, "output_schema").json["run_id"]
    drain(settings=broker.settings.replace(max_output_bytes=1 << 20))
    run = client.get(f"/v1/tasks/runs/{run_id}", headers=HEADERS).json
    assert run["status"] == "failed" and run["attempts"] == 1, run
    assert "output: the schema's evaluation exceeded its budget of 1,000,000 steps" in run["error"]["message"], run
