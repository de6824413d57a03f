"""The `parallel-web` SDK, unchanged, pointed at taskq with `base_url`: a real
gunicorn and real workers behind it."""

from __future__ import annotations

import re
from pathlib import Path

import parallel
import pytest
from parallel import NotFoundError, Parallel, Stream
from parallel.types import TaskGroupStatusEvent, TaskRunEvent, TaskRunEventsResponse
from parallel.types.task_run_progress_message_event import TaskRunProgressMessageEvent

from tests.conftest import API_KEY, OTHER_KEY, wait_until

# Every call the SDK's beta resources make (client.beta.task_run and .task_group in
# parallel-web 0.3 to 0.6, read from their source; not in the SDK installed here).
BETA_SDK_CALLS = [
    ("POST", "/v1/tasks/runs?beta=true"),  # 0.5 and 0.6 drop the ?beta=true
    ("GET", "/v1/tasks/runs/{run_id}/result?beta=true"),
    ("GET", "/v1beta/tasks/runs/{run_id}/events"),
    ("POST", "/v1beta/tasks/groups"),
    ("GET", "/v1beta/tasks/groups/{task_group_id}"),
    ("POST", "/v1beta/tasks/groups/{task_group_id}/runs"),
    ("GET", "/v1beta/tasks/groups/{task_group_id}/runs"),
    ("GET", "/v1beta/tasks/groups/{task_group_id}/events"),
]
_SDK_CALL = re.compile(r'self\._(get|post|put|patch|delete)\(\s*(?:path_template\()?f?"(/v1[^"]*)"')


@pytest.fixture
def sdk(gunicorn, worker):  # type: ignore[no-untyped-def]
    url = gunicorn()
    worker("threads")
    with Parallel(api_key=API_KEY, base_url=url, max_retries=0) as client:
        yield client


def test_sdk_drives_a_task_group_from_create_to_streamed_results(sdk):
    group = sdk.task_group.create(metadata={"batch": "sdk"})
    assert group.task_group_id.startswith("tgrp_") and group.metadata == {"batch": "sdk"}
    assert group.status.num_task_runs == 0

    added = sdk.task_group.add_runs(
        group.task_group_id,
        inputs=[{"input": {"i": i}, "processor": "echo", "metadata": {"i": i}} for i in range(5)],
        default_task_spec={"output_schema": {"type": "json", "json_schema": {"type": "object"}}},
    )
    assert len(added.run_ids) == 5 and added.status.num_task_runs == 5
    more = sdk.task_group.add_runs(group.task_group_id, inputs=[{"input": "hello", "processor": "shout"}])
    assert more.run_cursor == "4"
    run_ids = added.run_ids + more.run_ids

    wait_until(lambda: not sdk.task_group.retrieve(group.task_group_id).status.is_active, timeout_s=30)
    done = sdk.task_group.retrieve(group.task_group_id)
    assert done.status.num_task_runs == 6
    assert done.status.task_run_status_counts == {"completed": 6}

    runs = list(sdk.task_group.get_runs(group.task_group_id, include_input=True, include_output=True))
    assert all(isinstance(e, TaskRunEvent) for e in runs)
    assert [e.run.run_id for e in runs] == run_ids
    assert [e.run.task_group_id for e in runs] == [group.task_group_id] * 6
    assert [e.output.content for e in runs if e.output] == [{"i": i} for i in range(5)] + ["HELLO"]
    assert runs[0].input is not None and runs[0].input.input == {"i": 0} and runs[0].input.processor == "echo"
    resumed = list(sdk.task_group.get_runs(group.task_group_id, last_event_id=runs[2].event_id))
    assert [e.run.run_id for e in resumed] == run_ids[3:]

    events = list(sdk.task_group.events(group.task_group_id))
    ended = [e for e in events if isinstance(e, TaskRunEvent)]
    assert sorted(e.run.run_id for e in ended) == sorted(run_ids)
    assert isinstance(events[-1], TaskGroupStatusEvent) and events[-1].status.is_active is False
    tail = list(sdk.task_group.events(group.task_group_id, last_event_id=events[-2].event_id))
    assert [e.event_id for e in tail] == [events[-1].event_id]

    one = sdk.task_group.retrieve_run(run_ids[0], task_group_id=group.task_group_id)
    assert one.run_id == run_ids[0] and one.status == "completed"


def test_sdk_creates_retrieves_and_waits_for_a_task_run(sdk):
    run = sdk.task_run.create(input={"name": "Acme"}, processor="research", metadata={"who": "sdk"})
    assert run.status == "queued" and run.interaction_id == run.run_id
    result = sdk.task_run.result(run.run_id, api_timeout=30)
    assert result.run.status == "completed"
    assert result.output.type == "json" and result.output.content["name"] == "Acme"
    assert sdk.task_run.retrieve(run.run_id).status == "completed"

    events = list(sdk.task_run.events(run.run_id))
    assert [e.run.status for e in events if isinstance(e, TaskRunEvent)] == ["queued", "running", "completed"]
    assert [e.message for e in events if isinstance(e, TaskRunProgressMessageEvent)] == ["looking up Acme"]


def test_sdk_sees_404_for_another_tenants_group(sdk):
    group = sdk.task_group.create()
    with Parallel(api_key=OTHER_KEY, base_url=str(sdk.base_url), max_retries=0) as other, pytest.raises(NotFoundError):
        other.task_group.retrieve(group.task_group_id)


def installed_sdk_calls() -> set[tuple[str, str]]:
    """(method, path) of every call the installed SDK's task run and group resources make."""
    resources = Path(parallel.__file__).parent / "resources"
    return {
        (method.upper(), path)
        for name in ("task_run.py", "task_group.py")
        for method, path in _SDK_CALL.findall((resources / name).read_text())
    }


def test_every_path_any_sdk_calls_is_served_and_documented(client):
    installed = installed_sdk_calls()
    assert ("GET", "/v1/tasks/runs/{run_id}/events") in installed and len(installed) >= 9  # the source was read
    routes = client.application.url_map.bind("localhost")
    doc = client.get("/openapi.json").json
    ids = {"{run_id}": "trun_" + "0" * 32, "{task_group_id}": "tgrp_" + "0" * 32}
    for method, call in sorted(installed) + BETA_SDK_CALLS:
        template = call.split("?")[0]
        concrete = re.sub(r"\{\w+\}", lambda m: ids[m.group(0)], template)
        endpoint, _args = routes.match(concrete, method=method)  # NotFound / MethodNotAllowed fail the test
        documented = doc["paths"].get(template.replace("{task_group_id}", "{group_id}"), {})
        assert method.lower() in documented, f"{method} {template} ({endpoint}) is not in /openapi.json"


def test_the_beta_sdks_run_event_stream_is_served_under_v1beta(sdk):
    run = sdk.task_run.create(input={"name": "Beta"}, processor="research")
    sdk.task_run.result(run.run_id, api_timeout=30)

    # What client.beta.task_run.events() of parallel-web 0.3 to 0.6 sends, through the
    # installed SDK's own request and SSE machinery.
    beta = sdk.get(
        f"/v1beta/tasks/runs/{run.run_id}/events",
        cast_to=TaskRunEventsResponse,  # type: ignore[arg-type]
        stream=True,
        stream_cls=Stream[TaskRunEventsResponse],
        options={"headers": {"Accept": "text/event-stream"}},
    )
    events = list(beta)
    assert [e.run.status for e in events if isinstance(e, TaskRunEvent)] == ["queued", "running", "completed"]
    assert [e.message for e in events if isinstance(e, TaskRunProgressMessageEvent)] == ["looking up Beta"]
    assert [e.model_dump() for e in events] == [e.model_dump() for e in sdk.task_run.events(run.run_id)]


def test_streams_read_with_timeout_0_return_the_events_so_far_then_close(sdk):
    # Given a group with one run ended and one still running (so both streams would stay open)
    group = sdk.task_group.create()
    inputs = [{"input": {"i": 0}, "processor": "echo"}, {"input": {"seconds": 60}, "processor": "sleep"}]
    done, slow = sdk.task_group.add_runs(group.task_group_id, inputs=inputs).run_ids
    wait_until(lambda: sdk.task_run.retrieve(done).status == "completed", timeout_s=30)
    wait_until(lambda: sdk.task_run.retrieve(slow).status == "running", timeout_s=30)

    # When each is read with timeout=0 (as the SDK's own tests send), Then it holds what is there
    events = list(sdk.task_group.events(group.task_group_id, api_timeout=0))
    assert [(e.type, e.run.run_id, e.run.status) for e in events] == [("task_run.state", done, "completed")]
    run_events = list(sdk.task_run.events(slow, extra_query={"timeout": 0}))
    assert [e.run.status for e in run_events if isinstance(e, TaskRunEvent)] == ["queued", "running"]
    assert "s to go" in next(e.message for e in run_events if isinstance(e, TaskRunProgressMessageEvent))

    sdk.post(f"/v1/tasks/runs/{slow}/cancel", cast_to=object)


def test_sdk_fields_taskq_does_not_act_on_come_back_as_the_runs_warnings(sdk):
    # Given every run field the SDK has that taskq does not act on, and one taskq does not know
    run = sdk.task_run.create(
        input={"name": "Acme"},
        processor="research",
        source_policy={"include_domains": ["example.com"]},
        mcp_servers=[{"name": "tools", "url": "https://mcp.example.com"}],
        previous_interaction_id="trun_" + "0" * 32,
        enable_events=True,
        advanced_settings={"location": "us"},
        memory_scope_key="team-a",
        extra_body={"unheard_of": 1},
    )
    named = [
        "source_policy",
        "mcp_servers",
        "previous_interaction_id",
        "enable_events",
        "advanced_settings",
        "memory_scope_key",
        "unheard_of",
    ]

    # Then the SDK reads them as its own Warning type, naming each field, on every read
    assert run.warnings is not None and sorted(w.detail["field"] for w in run.warnings if w.detail) == sorted(named)
    assert all(w.type == "warning" and w.message for w in run.warnings)
    result = sdk.task_run.result(run.run_id, api_timeout=30)
    assert result.run.warnings == run.warnings and sdk.task_run.retrieve(run.run_id).warnings == run.warnings
    assert all(e.run.warnings == run.warnings for e in sdk.task_run.events(run.run_id) if isinstance(e, TaskRunEvent))

    # And in a group, per input: only the run whose input had the field is warned
    group = sdk.task_group.create()
    inputs = [
        {"input": {"i": 0}, "processor": "echo", "enable_events": False},
        {"input": {"i": 1}, "processor": "echo"},
    ]
    first, second = sdk.task_group.add_runs(group.task_group_id, inputs=inputs).run_ids
    warned = sdk.task_group.retrieve_run(first, task_group_id=group.task_group_id).warnings
    assert warned is not None and [w.detail for w in warned] == [{"field": "inputs.0.enable_events"}]
    assert sdk.task_group.retrieve_run(second, task_group_id=group.task_group_id).warnings is None
