"""Wire models: what taskq reads and writes over HTTP, named as on the wire
(the Parallel Task API's TaskRun, TaskRunResult, TaskSpec, ...)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import ValidationFailed


class RunStatus(str, Enum):
    queued = "queued"
    running = "running"
    action_required = "action_required"
    completed = "completed"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @classmethod
    def from_arg(cls, value: str | None, field: str = "status") -> RunStatus | None:
        """A status given as a filter (a query argument): None for none; a 422 naming
        `field` for a word that is not a status."""
        if value is None or value == "":
            return None
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ValidationFailed(f"{field}: must be one of {allowed}", {"field": field}) from None


# The one definition of each status set. The Lua steps receive these as tables
# (scripts.py writes them into the prelude of every script), so a new status is
# added here and nowhere else.
ACTIVE = frozenset({RunStatus.queued, RunStatus.running, RunStatus.action_required, RunStatus.cancelling})
TERMINAL = frozenset({RunStatus.completed, RunStatus.failed, RunStatus.cancelled})
# Statuses a webhook is sent for without asking for every change: a run's end, and a
# run that waits for someone to act.
NOTIFY = TERMINAL | {RunStatus.action_required}
# Statuses in which an attempt holds the run under a lease (`taskq:running`): leaving
# them gives the lease (and any limit it holds) back.
LEASED = frozenset({RunStatus.running, RunStatus.cancelling})
assert set(RunStatus) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL and LEASED <= ACTIVE

_S = RunStatus
# Every change of status a run may make (None: made). set_status refuses any other.
TRANSITIONS: dict[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset({_S.queued}),
    _S.queued: frozenset({_S.running, _S.cancelled}),
    # a retry, a shutdown, a rate limit -> queued; a question -> action_required
    _S.running: frozenset({_S.completed, _S.failed, _S.queued, _S.cancelling, _S.cancelled, _S.action_required}),
    _S.cancelling: frozenset({_S.cancelled, _S.completed}),
    _S.action_required: frozenset({_S.queued, _S.cancelled, _S.failed}),
    _S.completed: frozenset(),
    _S.failed: frozenset(),
    _S.cancelled: frozenset(),
}
assert all(not TRANSITIONS[s] for s in TERMINAL) and set(TRANSITIONS) == {None, *RunStatus}

MetadataValue = str | int | float | bool
# What a request may send: keys of at most 64 characters, strings of at most 512.
MetadataIn = dict[
    Annotated[str, StringConstraints(max_length=64)],
    Annotated[str, StringConstraints(max_length=512)] | StrictBool | StrictInt | StrictFloat,
]


# Fields of the Parallel Task API's run request that taskq accepts and does not act
# on. A run names each one it was given, and any field taskq does not know at all, in
# its `warnings`. A field that becomes a feature moves to RunInput and off this list.
NOT_ACTED_ON = (
    "source_policy",
    "mcp_servers",
    "previous_interaction_id",
    "enable_events",
    "advanced_settings",
    "memory_scope_key",
)

# A run's priority orders it within its lane (high first); lanes still take turns.
Priority = Literal["high", "normal", "low"]
PRIORITY_NAMES: tuple[Priority, ...] = ("high", "normal", "low")  # index: the band a lane is ordered by


class Wire(BaseModel):
    """A request: fields taskq does not use are accepted (the SDK sends some) and kept
    aside, so that `ignored()` can name them; they are never dumped, stored or echoed."""

    model_config = ConfigDict(extra="allow")

    def ignored(self, where: str = "") -> list[str]:
        """The path of every field given that taskq does not act on, nested ones too."""
        names = [where + name for name in self.__pydantic_extra__ or ()]
        for name, value in self.__dict__.items():  # the fields' values
            if isinstance(value, Wire):
                names += value.ignored(f"{where}{name}.")
        return names

    @model_serializer(mode="wrap")
    def _without_ignored(self, handler: SerializerFunctionWrapHandler) -> Any:
        shaped = handler(self)
        if self.__pydantic_extra__ and isinstance(shaped, dict):
            shaped = {k: v for k, v in shaped.items() if k not in self.__pydantic_extra__}
        return shaped


class ErrorObject(BaseModel):
    ref_id: str
    message: str
    detail: dict[str, Any] | None = None


class WarningObject(BaseModel):
    """A warning on a run, shaped as the Parallel API's: `type` "warning", `message`,
    and `detail.field` naming a request field taskq accepted and did not act on."""

    type: Literal["spec_validation_warning", "input_validation_warning", "warning"] = "warning"
    message: str
    detail: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorObject


class JsonSchema(Wire):
    type: Literal["json"] = "json"
    json_schema: dict[str, Any]


class TextSchema(Wire):
    type: Literal["text"] = "text"
    description: str | None = None


class AutoSchema(Wire):
    type: Literal["auto"] = "auto"


Schema = JsonSchema | TextSchema | AutoSchema


class TaskSpec(Wire):
    input_schema: JsonSchema | TextSchema | None = None
    output_schema: Schema | None = None

    @field_validator("input_schema", "output_schema", mode="before")
    @classmethod
    def _bare_string_is_text(cls, value: Any) -> Any:
        return {"type": "text", "description": value} if isinstance(value, str) else value


class Webhook(Wire):
    url: str = Field(max_length=2048)
    event_types: list[str] = Field(default_factory=lambda: ["task_run.status"])
    secret: str | None = Field(default=None, max_length=256)
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("headers")
    @classmethod
    def _headers_are_rfc9110(cls, value: dict[str, str]) -> dict[str, str]:
        from .headers import check_headers  # raises ValueError naming the bad header

        return check_headers(value)

    @field_validator("secret")
    @classmethod
    def _secret_is_usable(cls, value: str | None) -> str | None:
        from .webhooks.signing import secret_key  # raises ValueError for a secret verifiers refuse

        if value is not None:
            secret_key(value)
        return value

    @property
    def every_change(self) -> bool:
        """`task_run.state` asks for a delivery on every status change, not only the end."""
        return "task_run.state" in self.event_types


def _document_not_acted_on(schema: dict[str, Any]) -> None:
    for name in NOT_ACTED_ON:
        schema["properties"][name] = {"description": "accepted and not acted on: named in the run's warnings"}


class RunInput(Wire):
    """One run's input as given to POST /v1/tasks/runs, or as one of a group's inputs."""

    model_config = ConfigDict(json_schema_extra=_document_not_acted_on)

    input: dict[str, Any] | str
    processor: str = Field(min_length=1, max_length=200)
    metadata: MetadataIn | None = None
    task_spec: TaskSpec | None = None
    webhook: Webhook | None = None
    priority: Priority | None = None  # None: the processor's own (normal unless it says)
    run_at: AwareDatetime | None = None  # RFC 3339 with a zone; the run waits, queued, until then

    @field_validator("run_at", mode="before")
    @classmethod
    def _timestamp_text(cls, value: Any) -> Any:
        # A number would pass as seconds since the epoch (or ms? pydantic guesses): the
        # wire says RFC 3339, so a number is refused rather than guessed at.
        if isinstance(value, int | float):
            raise ValueError("run_at is an RFC 3339 timestamp with a zone, e.g. 2026-12-01T09:30:00Z")
        return value

    @model_validator(mode="before")
    @classmethod
    def _seed_spelling(cls, data: Any) -> Any:
        # `callback_webhook` is how the first clients spelled `webhook`.
        if isinstance(data, dict) and "callback_webhook" in data and "webhook" not in data:
            data = {**data, "webhook": data["callback_webhook"]}
            del data["callback_webhook"]
        return data


assert not set(NOT_ACTED_ON) & set(RunInput.model_fields), "a field RunInput acts on is still in NOT_ACTED_ON"


class OutputFile(BaseModel):
    """A file the run saved; `url` is good until `expires_at` (a fresh one on each read)."""

    name: str
    size: int
    content_type: str
    url: str
    expires_at: str


class OutputFileList(BaseModel):
    """One page of a run's output files (GET /v1/tasks/runs/{id}/outputs), in the
    order saved; `next_cursor` gets the next page (null on the last)."""

    outputs: list[OutputFile]
    next_cursor: str | None = None


class RequiredAction(BaseModel):
    """The question a run in `action_required` waits on; answer it with
    POST /v1/tasks/runs/{id}/action `{"input": ...}` fitting `schema`."""

    message: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    asked_at: str
    expires_at: str

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class TaskRun(BaseModel):
    run_id: str
    interaction_id: str
    status: RunStatus
    is_active: bool
    processor: str
    metadata: dict[str, MetadataValue] | None = None
    taskgroup_id: str | None = None
    created_at: str
    modified_at: str
    error: ErrorObject | None = None
    warnings: list[WarningObject] | None = None
    attempts: int = 0
    max_retries: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    next_attempt_at: str | None = None
    errors: list[ErrorObject] = Field(default_factory=list)
    # The first 100 of the run's files; `outputs_count` says how many it has, and
    # `outputs_next`, when `outputs` does not hold them all, where the rest are listed.
    outputs: list[OutputFile] = Field(default_factory=list)
    outputs_count: int = 0
    outputs_next: str | None = None
    required_action: RequiredAction | None = None
    priority: Priority = "normal"


class TaskRunOutput(BaseModel):
    type: Literal["json", "text"]
    content: Any
    basis: list[dict[str, Any]] = Field(default_factory=list)


class TaskRunResult(BaseModel):
    run: TaskRun
    output: TaskRunOutput


class TaskRunList(BaseModel):
    runs: list[TaskRun]
    next_cursor: str | None = None


# -- task groups


class TaskGroupCreate(Wire):
    metadata: MetadataIn | None = None


class TaskGroupRunRequest(Wire):
    default_task_spec: TaskSpec | None = None
    inputs: list[Any]


class TaskGroupStatus(BaseModel):
    num_task_runs: int
    task_run_status_counts: dict[str, int]
    is_active: bool
    status_message: str | None = None
    modified_at: str | None = None


class TaskGroup(BaseModel):
    taskgroup_id: str
    status: TaskGroupStatus
    metadata: dict[str, MetadataValue] | None = None
    created_at: str | None = None


class TaskGroupRunResponse(BaseModel):
    status: TaskGroupStatus
    run_ids: list[str]
    run_cursor: str | None = None
    event_cursor: str | None = None


# -- a person's answer, webhook deliveries


class ActionAnswer(Wire):
    """The body of POST /v1/tasks/runs/{id}/action."""

    input: Any


class WebhookAttempt(BaseModel):
    attempt: int
    attempted_at: str
    status_code: int | None = None
    latency_ms: int
    error: str | None = None
    outcome: str


class WebhookDelivery(BaseModel):
    delivery_id: str
    run_id: str
    event_status: RunStatus
    state: str
    created_at: str
    next_attempt_at: str | None = None
    dead_at: str | None = None
    attempts: list[WebhookAttempt]
